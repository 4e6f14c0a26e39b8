// libFuzzer target for the trainer's configuration: any bytes, read as a JSON
// config file (input starting with '{') or as --opts KEY VALUE lines, must
// either give a configuration whose model and data options are checked, or be
// refused with an fg::Error naming the problem. A library exception escaping
// (a JSON type error, std::out_of_range from a number conversion) is a finding:
// the user would see a message that names no key.
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/options.h"
#include "data/transforms.h"
#include "engine/error.h"
#include "train/config.h"

namespace {

const char* const kDataKeys[] = {
    "DATA.IMG_SIZE",  "DATA.INTERPOLATION",   "DATA.MASKS",         "DATA.JPEG_DCT_SCALING",
    "TEST.CROP",      "AUG.COLOR_JITTER",     "AUG.AUTO_AUGMENT",   "AUG.REPROB",
    "AUG.REMODE",     "AUG.RECOUNT",          "AUG.MIXUP",          "AUG.CUTMIX",
    "AUG.CUTMIX_MINMAX", "AUG.MIXUP_PROB",    "AUG.MIXUP_SWITCH_PROB", "AUG.MIXUP_MODE",
    "AUG.CUTMIX_MOVES_MASK", "MODEL.LABEL_SMOOTHING"};

std::string text_of(const fg::train::Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

void apply(fg::train::Config& config, const std::string& input) {
  if (!input.empty() && input[0] == '{') {
    config.merge_text(input, "fuzz.json");  // what merge_file does with a file's text
    return;
  }
  // --opts: "KEY VALUE" per line.
  size_t start = 0;
  while (start < input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string::npos) end = input.size();
    const std::string line = input.substr(start, end - start);
    const size_t space = line.find(' ');
    if (space != std::string::npos) config.set_from_string(line.substr(0, space), line.substr(space + 1));
    start = end + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  fg::train::Config config;
  try {
    apply(config, input);
    config.validate();
    (void)config.model_config();
  } catch (const fg::Error&) {
  }
  // The data pipeline's options, as the trainer builds them, and the
  // RandAugment spec they parse.
  try {
    fg::data::DataOptions o;
    for (const char* key : kDataKeys) o.set(key, text_of(config.get(key)));
    o.validate();
    const fg::data::TrainTransform transform(o);
    (void)transform;
  } catch (const fg::Error&) {
  }
  return 0;
}
