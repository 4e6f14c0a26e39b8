// libFuzzer target for the safetensors reader: any bytes must either load or
// be refused with an fg::Error.
#include <cstddef>
#include <cstdint>

#include "engine/error.h"
#include "engine/serialize/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto contents = fg::serialize::read_safetensors_from_memory(data, size, "fuzz.safetensors");
    (void)contents;
  } catch (const fg::Error&) {
  }
  return 0;
}
