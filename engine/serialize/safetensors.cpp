#include "engine/serialize/safetensors.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_set>

#include "engine/serialize/byte_io.h"

namespace fg::serialize {

namespace {

using Json = nlohmann::ordered_json;  // keeps the header's order, which is the tensors' order

// The reference implementation refuses larger headers; so does fgmoe, before
// reading one.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three levels (root, tensor entry, shape list).
constexpr int kMaxHeaderNesting = 8;
constexpr const char* kMetadataKey = "__metadata__";

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypeNames[] = {
    {"F32", DType::Float32}, {"F64", DType::Float64}, {"F16", DType::Float16},
    {"BF16", DType::BFloat16}, {"I64", DType::Int64}, {"I32", DType::Int32},
    {"U8", DType::UInt8},    {"BOOL", DType::Bool},
};
// Valid safetensors dtypes that fgmoe has no DType for.
constexpr const char* kUnsupportedDTypes[] = {"I8", "I16", "U16", "U32", "U64", "F8_E4M3",
                                              "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
                                              "C64"};

const char* safetensors_dtype(DType dtype) {
  for (const auto& d : kDTypeNames) {
    if (d.dtype == dtype) return d.name;
  }
  FG_ASSERT(false);
}

// Rejects deep nesting before the JSON parser sees it.
int max_nesting(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

struct TensorEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;  // within the data buffer
};

SafetensorsContents read_contents(const ByteSource& source) {
  const std::string& file = source.name();
  FG_CHECK(source.size() >= 8, file, ": not a safetensors file (only ", source.size(), " bytes)");
  unsigned char length_bytes[8];
  source.read(0, length_bytes, 8);
  const uint64_t header_size = load_le64(length_bytes);
  FG_CHECK(header_size <= source.size() - 8, file, ": safetensors header claims ", header_size,
           " bytes, but only ", source.size() - 8, " follow (truncated or not a safetensors file)");
  FG_CHECK(header_size <= kMaxHeaderBytes, file, ": safetensors header of ", header_size,
           " bytes is larger than the format allows (", kMaxHeaderBytes, ")");
  const std::string header = source.read_string(8, header_size);
  FG_CHECK(!header.empty() && header[0] == '{', file,
           ": safetensors header does not start with '{' (not a safetensors file?)");
  FG_CHECK(max_nesting(header) <= kMaxHeaderNesting, file,
           ": safetensors header nests deeper than the format does");

  Json json;
  try {
    json = Json::parse(header);
  } catch (const Json::exception& e) {
    FG_CHECK(false, file, ": safetensors header is not valid JSON: ", e.what());
  }
  FG_CHECK(json.is_object(), file, ": safetensors header is not a JSON object");

  SafetensorsContents out;
  std::vector<TensorEntry> entries;
  const uint64_t data_start = 8 + header_size;
  const uint64_t data_size = source.size() - data_start;
  for (const auto& [name, info] : json.items()) {
    const std::string where = str_cat(file, ": safetensors entry '", printable(name), "'");
    if (name == kMetadataKey) {
      FG_CHECK(info.is_object(), where, " is not an object");
      for (const auto& [key, text] : info.items()) {
        FG_CHECK(text.is_string(), where, ": the value of '", printable(key), "' is not a string");
        out.metadata.emplace_back(key, text.get<std::string>());
      }
      continue;
    }
    FG_CHECK(info.is_object(), where, " is not an object");
    const auto dtype_it = info.find("dtype");
    const auto shape_it = info.find("shape");
    const auto offsets_it = info.find("data_offsets");
    FG_CHECK(dtype_it != info.end() && dtype_it->is_string(), where, " has no dtype string");
    FG_CHECK(shape_it != info.end() && shape_it->is_array(), where, " has no shape list");
    FG_CHECK(offsets_it != info.end() && offsets_it->is_array() && offsets_it->size() == 2 &&
                 (*offsets_it)[0].is_number_unsigned() && (*offsets_it)[1].is_number_unsigned(),
             where, " has no data_offsets [begin, end] of non-negative integers");

    const std::string dtype_text = dtype_it->get<std::string>();
    std::optional<DType> dtype;
    for (const auto& d : kDTypeNames) {
      if (dtype_text == d.name) dtype = d.dtype;
    }
    if (!dtype) {
      const bool known = std::any_of(std::begin(kUnsupportedDTypes), std::end(kUnsupportedDTypes),
                                     [&](const char* n) { return dtype_text == n; });
      FG_CHECK(false, where, ": dtype ", printable(dtype_text),
               known ? " is not supported by fgmoe" : " is not a safetensors dtype");
    }

    TensorEntry e{name, *dtype, {}, (*offsets_it)[0].get<uint64_t>(),
                  (*offsets_it)[1].get<uint64_t>()};
    FG_CHECK(e.begin <= e.end && e.end <= data_size, where, ": data_offsets [", e.begin, ", ",
             e.end, "] do not lie within the ", data_size, " data bytes");
    // The element count may not overflow, and must match the byte range exactly.
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& dim : *shape_it) {
      FG_CHECK(dim.is_number_unsigned() && dim.get<uint64_t>() <= uint64_t{INT64_MAX}, where,
               ": shape holds something other than a non-negative integer");
      const uint64_t d = dim.get<uint64_t>();
      overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
      e.shape.push_back(static_cast<int64_t>(d));
    }
    const uint64_t element_size = dtype_size(e.dtype);
    FG_CHECK(!overflow && numel <= (e.end - e.begin) / element_size &&
                 numel * element_size == e.end - e.begin,
             where, ": shape ", shape_str(e.shape), " of ", dtype_text, " needs ",
             overflow ? std::string("more than 2^64") : std::to_string(numel * element_size),
             " bytes, but data_offsets span ", e.end - e.begin);
    entries.push_back(std::move(e));
  }

  // The byte ranges must tile the data exactly: no overlaps, no holes, as the
  // format requires (it keeps a file from being read two ways).
  std::vector<const TensorEntry*> by_offset;
  for (const auto& e : entries) by_offset.push_back(&e);
  std::stable_sort(by_offset.begin(), by_offset.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  for (const TensorEntry* e : by_offset) {
    FG_CHECK(e->begin == covered, file, ": safetensors entry '", printable(e->name),
             "' data [", e->begin, ", ", e->end, ") ",
             e->begin < covered ? "overlaps another tensor's" : "leaves a hole before it");
    covered = e->end;
  }
  FG_CHECK(covered == data_size, file, ": safetensors data has ", data_size - covered,
           " bytes that no tensor uses");

  for (const TensorEntry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, kCPU);
    source.read(data_start + e.begin, t.data_ptr(), e.end - e.begin);
    FG_CHECK(!out.tensors.contains(e.name), file, ": safetensors names '", printable(e.name),
             "' twice");
    out.tensors.insert(e.name, t);
  }
  return out;
}

}  // namespace

SafetensorsContents read_safetensors(const std::string& path) {
  return read_contents(*open_file_source(path));
}

SafetensorsContents read_safetensors_from_memory(const void* data, size_t size,
                                                 const std::string& name) {
  return read_contents(*memory_source(data, size, name));
}

StateDict load_safetensors(const std::string& path) { return read_safetensors(path).tensors; }

void save_safetensors(const std::string& path, const StateDict& state,
                      const std::vector<std::pair<std::string, std::string>>& metadata) {
  // Host copies in row-major order, as the format stores them.
  std::vector<Tensor> data;
  for (const auto& [name, tensor] : state) {
    FG_CHECK(name != kMetadataKey, path, ": a tensor may not be named ", kMetadataKey);
    FG_CHECK(tensor.defined(), path, ": tensor '", name, "' is undefined");
    data.push_back(tensor.cpu().contiguous());
  }
  // Wider elements first, so that every tensor's data starts aligned to its
  // element size (the data may then be mapped in place); the header keeps the
  // state dict's order.
  std::vector<size_t> order(data.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return data[a].element_size() > data[b].element_size();
  });
  std::vector<uint64_t> begin(data.size());
  uint64_t offset = 0;
  for (size_t i : order) {
    begin[i] = offset;
    offset += static_cast<uint64_t>(data[i].numel()) * data[i].element_size();
  }

  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata) {
      FG_CHECK(!meta.contains(key), path, ": metadata key '", key, "' given twice");
      meta[key] = value;
    }
    header[kMetadataKey] = std::move(meta);
  }
  size_t i = 0;
  for (const auto& [name, tensor] : state) {
    const uint64_t nbytes = static_cast<uint64_t>(data[i].numel()) * data[i].element_size();
    header[name] = Json{{"dtype", safetensors_dtype(tensor.dtype())},
                        {"shape", tensor.shape()},
                        {"data_offsets", {begin[i], begin[i] + nbytes}}};
    ++i;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const Json::exception& e) {
    FG_CHECK(false, path, ": cannot write the safetensors header (names and metadata must be "
             "valid UTF-8): ", e.what());
  }
  // Spaces pad the header so that the data begins on an 8-byte boundary.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  AtomicFileWriter out(path);
  std::string length;
  append_le64(length, header_text.size());
  out.write(length);
  out.write(header_text);
  for (size_t k : order) {
    out.write(data[k].data_ptr(), static_cast<size_t>(data[k].numel()) * data[k].element_size());
  }
  out.commit();
}

}  // namespace fg::serialize
