// Byte-level plumbing shared by the .pth and safetensors code: random-access
// inputs (a file or a memory buffer), atomic file output, little-endian
// fields and CRC-32. Internal to engine/serialize.
#pragma once

#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "engine/error.h"

namespace fg::serialize {

// The formats store raw little-endian element data, which fgmoe copies as is.
static_assert(std::endian::native == std::endian::little,
              "fgmoe's file formats assume a little-endian host");

// Something to read bytes from at arbitrary offsets. Every read is checked
// against size(); name() starts every error message.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }
  // Copies [offset, offset + n) into dst; throws naming the source when the
  // range is outside the input or the read fails.
  void read(uint64_t offset, void* dst, uint64_t n) const;
  std::string read_string(uint64_t offset, uint64_t n) const;

 protected:
  ByteSource(std::string name, uint64_t size) : name_(std::move(name)), size_(size) {}
  virtual void read_impl(uint64_t offset, void* dst, uint64_t n) const = 0;

 private:
  std::string name_;
  uint64_t size_;
};

// A file opened for reading; its size is taken once at open.
std::unique_ptr<ByteSource> open_file_source(const std::string& path);
// Borrows data (which must outlive the source); for tests and fuzzing.
std::unique_ptr<ByteSource> memory_source(const void* data, size_t size, std::string name);

// Writes `path` through `path + ".tmp"` and a rename in commit(), so that a
// crash or an error never leaves a half-written file under the real name.
// Destroying an uncommitted writer removes the temporary file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  uint64_t position() const { return position_; }
  // Flushes to disk and renames the temporary file onto the final path.
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
  uint64_t position_ = 0;
};

// ---- little-endian fields ----
inline uint16_t load_le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
inline uint32_t load_le32(const unsigned char* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}
inline uint64_t load_le64(const unsigned char* p) {
  return static_cast<uint64_t>(load_le32(p)) | static_cast<uint64_t>(load_le32(p + 4)) << 32;
}
inline void append_le16(std::string& out, uint16_t v) {
  out += static_cast<char>(v & 0xff);
  out += static_cast<char>(v >> 8);
}
inline void append_le32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void append_le64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

// ---- CRC-32 (the zip polynomial) ----
// crc32_update(0, data, n) is the CRC of data; pass the previous result to continue.
uint32_t crc32_update(uint32_t crc, const void* data, size_t n);

// Bytes rendered safely for a message: printable ASCII as is, others as \xNN,
// cut after max_chars.
std::string printable(std::string_view bytes, size_t max_chars = 120);

}  // namespace fg::serialize
