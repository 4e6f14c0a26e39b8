// safetensors files: an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw data.
//
// Loading validates everything the header claims (length, JSON shape, dtype
// names, shapes, byte ranges that must tile the data exactly, without
// overlaps or holes) before allocating; tensors load as CPU tensors of the
// file's dtype, in header order. Saving is atomic (through `<path>.tmp`).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/state_dict.h"

namespace fg::serialize {

StateDict load_safetensors(const std::string& path);
void save_safetensors(const std::string& path, const StateDict& state,
                      const std::vector<std::pair<std::string, std::string>>& metadata = {});

// ---- beyond the basics ----

struct SafetensorsContents {
  StateDict tensors;
  std::vector<std::pair<std::string, std::string>> metadata;  // the "__metadata__" entry
};
SafetensorsContents read_safetensors(const std::string& path);
// The same on bytes in memory; `name` stands for the file in errors.
SafetensorsContents read_safetensors_from_memory(const void* data, size_t size,
                                                 const std::string& name);

}  // namespace fg::serialize
