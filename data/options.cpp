#include "data/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "data/imaging.h"
#include "data/rand_augment.h"
#include "engine/error.h"

namespace fg::data {
namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\n");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\n");
  return s.substr(a, b - a + 1);
}

}  // namespace

double parse_config_number(const std::string& key, const std::string& text) {
  const std::string t = trim(text);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(t.c_str(), &end);
  FG_CHECK(!t.empty() && end && *end == '\0' && errno == 0 && std::isfinite(v), "config key ", key,
           ": '", text, "' is not a number");
  return v;
}

int parse_config_int(const std::string& key, const std::string& text) {
  const double v = parse_config_number(key, text);
  FG_CHECK(v == std::floor(v), "config key ", key, ": '", text, "' is not an integer");
  FG_CHECK(std::fabs(v) <= std::numeric_limits<int>::max(), "config key ", key, ": '", text,
           "' is out of range");
  return static_cast<int>(v);
}

namespace {

bool parse_bool(const std::string& key, const std::string& text) {
  const std::string t = trim(text);
  if (t == "true" || t == "True" || t == "1") return true;
  if (t == "false" || t == "False" || t == "0") return false;
  FG_CHECK(false, "config key ", key, ": '", text, "' is not a boolean (true or false)");
  return false;
}

std::vector<double> parse_list(const std::string& key, const std::string& text) {
  std::string t = trim(text);
  if (!t.empty() && t.front() == '[') t = t.substr(1);
  if (!t.empty() && t.back() == ']') t.pop_back();
  t = trim(t);
  std::vector<double> out;
  if (t.empty() || t == "None" || t == "null") return out;
  size_t start = 0;
  while (start <= t.size()) {
    const size_t comma = t.find(',', start);
    out.push_back(parse_config_number(key, t.substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string parse_string(const std::string& text) {
  std::string t = trim(text);
  if (t.size() >= 2 &&
      ((t.front() == '"' && t.back() == '"') || (t.front() == '\'' && t.back() == '\''))) {
    t = t.substr(1, t.size() - 2);
  }
  return t;
}

}  // namespace

void DataOptions::set(const std::string& key, const std::string& value) {
  if (key == "DATA.IMG_SIZE")
    img_size = parse_config_int(key, value);
  else if (key == "DATA.INTERPOLATION")
    interpolation = parse_string(value);
  else if (key == "DATA.MASKS")
    masks = parse_bool(key, value);
  else if (key == "TEST.CROP")
    test_crop = parse_bool(key, value);
  else if (key == "AUG.COLOR_JITTER")
    color_jitter = parse_config_number(key, value);
  else if (key == "AUG.AUTO_AUGMENT")
    auto_augment = parse_string(value);
  else if (key == "AUG.REPROB")
    reprob = parse_config_number(key, value);
  else if (key == "AUG.REMODE")
    remode = parse_string(value);
  else if (key == "AUG.RECOUNT")
    recount = parse_config_int(key, value);
  else if (key == "AUG.MIXUP")
    mixup = parse_config_number(key, value);
  else if (key == "AUG.CUTMIX")
    cutmix = parse_config_number(key, value);
  else if (key == "AUG.CUTMIX_MINMAX")
    cutmix_minmax = parse_list(key, value);
  else if (key == "AUG.MIXUP_PROB")
    mixup_prob = parse_config_number(key, value);
  else if (key == "AUG.MIXUP_SWITCH_PROB")
    mixup_switch_prob = parse_config_number(key, value);
  else if (key == "AUG.MIXUP_MODE")
    mixup_mode = parse_string(value);
  else if (key == "AUG.CUTMIX_MOVES_MASK")
    cutmix_moves_mask = parse_bool(key, value);
  else if (key == "DATA.JPEG_DCT_SCALING")
    jpeg_dct_scaling = parse_bool(key, value);
  else if (key == "MODEL.LABEL_SMOOTHING")
    label_smoothing = parse_config_number(key, value);
  else
    FG_CHECK(false, "unknown data config key ", key);
}

void DataOptions::validate() const {
  FG_CHECK(img_size >= 8 && img_size <= 8192, "config key DATA.IMG_SIZE must be in [8, 8192], got ",
           img_size);
  if (interpolation != "random") {
    try {
      parse_interpolation(interpolation);
    } catch (const Error&) {
      FG_CHECK(false, "config key DATA.INTERPOLATION: unknown interpolation '", interpolation,
               "' (bicubic, bilinear, random, nearest, box, hamming or lanczos)");
    }
  }
  FG_CHECK(reprob >= 0 && reprob <= 1, "config key AUG.REPROB must be in [0, 1], got ", reprob);
  FG_CHECK(remode == "pixel" || remode == "rand" || remode == "const" || remode.empty(),
           "config key AUG.REMODE must be pixel, rand or const, got '", remode, "'");
  FG_CHECK(recount >= 1, "config key AUG.RECOUNT must be at least 1, got ", recount);
  FG_CHECK(mixup >= 0, "config key AUG.MIXUP must not be negative, got ", mixup);
  FG_CHECK(cutmix >= 0, "config key AUG.CUTMIX must not be negative, got ", cutmix);
  FG_CHECK(cutmix_minmax.empty() || (cutmix_minmax.size() == 2 && cutmix_minmax[0] >= 0 &&
                                     cutmix_minmax[0] < cutmix_minmax[1] && cutmix_minmax[1] <= 1),
           "config key AUG.CUTMIX_MINMAX must be [] or [min, max] with 0 <= min < max <= 1");
  FG_CHECK(mixup_prob >= 0 && mixup_prob <= 1, "config key AUG.MIXUP_PROB must be in [0, 1]");
  FG_CHECK(mixup_switch_prob >= 0 && mixup_switch_prob <= 1,
           "config key AUG.MIXUP_SWITCH_PROB must be in [0, 1]");
  FG_CHECK(mixup_mode == "batch" || mixup_mode == "pair" || mixup_mode == "elem",
           "config key AUG.MIXUP_MODE must be batch, pair or elem, got '", mixup_mode, "'");
  FG_CHECK(label_smoothing >= 0 && label_smoothing < 1,
           "config key MODEL.LABEL_SMOOTHING must be in [0, 1), got ", label_smoothing);
  FG_CHECK(scale_min > 0 && scale_min <= scale_max,
           "RandomResizedCrop scale must be (min, max) with 0 < min <= max");
  FG_CHECK(ratio_min > 0 && ratio_min <= ratio_max,
           "RandomResizedCrop ratio must be (min, max) with 0 < min <= max");
  FG_CHECK(hflip >= 0 && hflip <= 1 && vflip >= 0 && vflip <= 1,
           "flip probabilities must be in [0, 1]");
  for (int c = 0; c < 3; ++c) FG_CHECK(std[c] > 0, "normalization std must be positive");
  // Parses the RandAugment spec, which names the key in its errors.
  if (!auto_augment.empty() && auto_augment != "none") {
    RandAugmentConfig::parse(auto_augment, img_size, mean, interpolation);
  }
}

int DataOptions::eval_resize_size() const { return static_cast<int>((256.0 / 224.0) * img_size); }

}  // namespace fg::data
