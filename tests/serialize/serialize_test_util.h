// Helpers for the serialization tests: a scratch directory, tensors with
// known contents, raw byte access, and builders for hand-made (often
// deliberately broken) pickles, zip archives and safetensors files.
#pragma once

#include <doctest/doctest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "engine/serialize/byte_io.h"
#include "engine/serialize/pth.h"
#include "engine/serialize/safetensors.h"
#include "engine/serialize/zip.h"
#include "engine/tensor.h"

namespace fg::serialize::testing {

// A fresh directory under the system's temporary folder, removed at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "fgmoe-serialize-XXXXXX").string();
    REQUIRE(mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// The tensor's elements in row-major order, as raw bytes.
inline std::string tensor_bytes(const Tensor& t) {
  const Tensor c = t.cpu().contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()),
                     static_cast<size_t>(c.numel()) * c.element_size());
}

// A tensor of dtype whose elements are distinct, representable values derived from i.
inline Tensor patterned_tensor(const Shape& shape, DType dtype, int seed = 0) {
  const int64_t n = shape_numel(shape);
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = i + seed * 7;
    switch (dtype) {
      case DType::Bool: values[i] = (k * 5 + 1) % 3 == 0; break;
      case DType::UInt8: values[i] = static_cast<double>((k * 37 + 11) % 256); break;
      case DType::Int32: values[i] = static_cast<double>((k * 7919 - 40000) * (k % 2 ? -1 : 1)); break;
      case DType::Int64: values[i] = static_cast<double>((k - 5) * 1234567891LL); break;
      default: values[i] = (static_cast<double>(k) - 3.25) * 0.5; break;  // exact in every float type
    }
  }
  Tensor f64 = Tensor::from_vector<double>(values, shape);
  return f64.to(dtype);
}

// Exact equality of dtype, shape and elements.
inline void check_same_tensor(const Tensor& a, const Tensor& b) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  CHECK(a.dtype() == b.dtype());
  CHECK(a.shape() == b.shape());
  CHECK(tensor_bytes(a) == tensor_bytes(b));
}

// CHECK that fn throws fg::Error whose message contains every one of needles.
inline void check_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  bool threw = false;
  try {
    fn();
  } catch (const fg::Error& e) {
    threw = true;
    const std::string message = e.what();
    for (const auto& needle : needles) {
      INFO("message: ", message);
      CHECK_MESSAGE(message.find(needle) != std::string::npos, "missing '", needle, "'");
    }
  }
  CHECK_MESSAGE(threw, "expected an fg::Error");
}

// Writes a zip archive of (name, bytes) records with fgmoe's writer and returns its bytes.
inline std::string make_zip(const std::vector<std::pair<std::string, std::string>>& records,
                            bool force_zip64 = false) {
  ScratchDir dir;
  const std::string path = dir.file("archive.zip");
  {
    AtomicFileWriter out(path);
    ZipWriter zip(out, force_zip64);
    for (const auto& [name, bytes] : records) zip.add(name, bytes.data(), bytes.size());
    zip.finish();
    out.commit();
  }
  return read_file(path);
}

// A .pth archive around a hand-made pickle and storage records ("0" -> bytes).
inline std::string make_pth(const std::string& pickle,
                            const std::vector<std::pair<std::string, std::string>>& storages = {}) {
  std::vector<std::pair<std::string, std::string>> records = {{"archive/data.pkl", pickle}};
  for (const auto& [key, bytes] : storages) records.emplace_back("archive/data/" + key, bytes);
  records.emplace_back("archive/version", "3\n");
  return make_zip(records);
}

inline Value load_bytes(const std::string& bytes, const std::string& name = "test.pth") {
  return load_pth_from_memory(bytes.data(), bytes.size(), name);
}

// Assembles pickle opcodes by name.
class PickleBuilder {
 public:
  PickleBuilder& proto(int version = 2) { return raw({'\x80', static_cast<char>(version)}); }
  PickleBuilder& op(char code) { return raw(std::string(1, code)); }
  PickleBuilder& op(unsigned char code) { return op(static_cast<char>(code)); }
  PickleBuilder& raw(const std::string& bytes) {
    out_ += bytes;
    return *this;
  }
  PickleBuilder& global(const std::string& module, const std::string& name) {
    return op('c').raw(module + "\n" + name + "\n");
  }
  PickleBuilder& str(const std::string& s) {
    op('X');
    append_le32(out_, static_cast<uint32_t>(s.size()));
    return raw(s);
  }
  PickleBuilder& integer(int64_t v) {
    if (v >= 0 && v < 256) return op('K').raw(std::string(1, static_cast<char>(v)));
    op('J');
    append_le32(out_, static_cast<uint32_t>(static_cast<int32_t>(v)));
    return *this;
  }
  // LONG1 with the given little-endian two's complement bytes.
  PickleBuilder& long1(const std::string& le_bytes) {
    op(static_cast<unsigned char>(0x8a));
    out_ += static_cast<char>(le_bytes.size());
    return raw(le_bytes);
  }
  PickleBuilder& long1(int64_t v) {
    std::string b(8, '\0');
    std::memcpy(b.data(), &v, 8);
    return long1(b);
  }
  PickleBuilder& mark() { return op('('); }
  PickleBuilder& tuple() { return op('t'); }
  PickleBuilder& empty_tuple() { return op(')'); }
  PickleBuilder& empty_dict() { return op('}'); }
  PickleBuilder& empty_list() { return op(']'); }
  PickleBuilder& setitems() { return op('u'); }
  PickleBuilder& reduce() { return op('R'); }
  PickleBuilder& boolean(bool v) { return op(static_cast<unsigned char>(v ? 0x88 : 0x89)); }
  PickleBuilder& stop() { return op('.'); }

  // A persistent storage id as torch.save writes it.
  PickleBuilder& storage(const std::string& storage_class, const std::string& key, int64_t numel) {
    mark().str("storage").global("torch", storage_class).str(key).str("cpu").integer(numel);
    return tuple().op('Q');
  }
  PickleBuilder& int_tuple(const std::vector<int64_t>& values) {
    mark();
    for (int64_t v : values) integer(v);
    return tuple();
  }
  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())
  PickleBuilder& tensor(const std::string& storage_class, const std::string& key, int64_t numel,
                        int64_t offset, const std::vector<int64_t>& size,
                        const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").mark();
    storage(storage_class, key, numel).integer(offset).int_tuple(size).int_tuple(stride);
    boolean(false).global("collections", "OrderedDict").empty_tuple().reduce();
    return tuple().reduce();
  }

  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

// Raw little-endian float32 bytes of values.
inline std::string float_bytes(const std::vector<float>& values) {
  std::string out(values.size() * 4, '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// A safetensors file from a header text and data bytes (length prefix computed).
inline std::string make_safetensors(const std::string& header, const std::string& data) {
  std::string out;
  append_le64(out, header.size());
  return out + header + data;
}

}  // namespace fg::serialize::testing
