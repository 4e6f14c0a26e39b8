// libFuzzer target for the .pth reader: any bytes must either load or be
// refused with an fg::Error; a crash, a hang, a leak or undefined behaviour
// (under the sanitizers this target is built with) is a bug. A file holding a
// single tensor also goes through the mask conversion (train_mask/*.pth).
#include <cstddef>
#include <cstdint>

#include "data/dataset.h"
#include "engine/error.h"
#include "engine/serialize/pth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fg::serialize::Value v = fg::serialize::load_pth_from_memory(data, size, "fuzz.pth");
    if (v.is_tensor()) {
      fg::data::PlanarImage mask;
      fg::data::mask_from_tensor(v.as_tensor(), "fuzz.pth", mask);
    }
  } catch (const fg::Error&) {
  }
  try {
    const fg::StateDict s = fg::serialize::load_state_dict_pth_from_memory(data, size, "fuzz.pth");
    (void)s;
  } catch (const fg::Error&) {
  }
  return 0;
}
