#include "engine/serialize/byte_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>

namespace fg::serialize {

// ---------------------------------------------------------------- inputs

void ByteSource::read(uint64_t offset, void* dst, uint64_t n) const {
  FG_CHECK(offset <= size_ && n <= size_ - offset, name_, ": truncated or corrupt: needs ", n,
           " bytes at offset ", offset, " but the input has only ", size_, " bytes");
  if (n) read_impl(offset, dst, n);
}

std::string ByteSource::read_string(uint64_t offset, uint64_t n) const {
  // Checked before allocating, so a lying length cannot request a huge buffer.
  FG_CHECK(offset <= size_ && n <= size_ - offset, name_, ": truncated or corrupt: needs ", n,
           " bytes at offset ", offset, " but the input has only ", size_, " bytes");
  std::string out(n, '\0');
  read(offset, out.data(), n);
  return out;
}

namespace {

class FileSource final : public ByteSource {
 public:
  FileSource(std::string path, int fd, uint64_t size) : ByteSource(std::move(path), size), fd_(fd) {}
  ~FileSource() override { ::close(fd_); }

 protected:
  void read_impl(uint64_t offset, void* dst, uint64_t n) const override {
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      // pread moves at most about 2 GiB per call on Linux; loop over the rest.
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, uint64_t{1} << 30));
      const ssize_t got = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      FG_CHECK(got > 0, name(), ": read failed at byte ", offset, ": ",
               got < 0 ? std::strerror(errno) : "file shrank while reading");
      out += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<uint64_t>(got);
    }
  }

 private:
  int fd_;
};

class MemorySource final : public ByteSource {
 public:
  MemorySource(const void* data, size_t size, std::string name)
      : ByteSource(std::move(name), size), data_(static_cast<const char*>(data)) {}

 protected:
  void read_impl(uint64_t offset, void* dst, uint64_t n) const override {
    std::memcpy(dst, data_ + offset, n);
  }

 private:
  const char* data_;
};

}  // namespace

std::unique_ptr<ByteSource> open_file_source(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FG_CHECK(fd >= 0, path, ": cannot open: ", std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const bool is_dir = S_ISDIR(st.st_mode);
    ::close(fd);
    FG_CHECK(false, path, is_dir ? ": is a directory, not a file" : ": not a regular file");
  }
  return std::make_unique<FileSource>(path, fd, static_cast<uint64_t>(st.st_size));
}

std::unique_ptr<ByteSource> memory_source(const void* data, size_t size, std::string name) {
  return std::make_unique<MemorySource>(data, size, std::move(name));
}

// ---------------------------------------------------------------- output

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
  FG_CHECK(!path_.empty(), "cannot save to an empty path");
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  FG_CHECK(file_ != nullptr, path_, ": cannot create ", tmp_path_, ": ", std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t n) {
  FG_CHECK(file_ != nullptr, path_, ": write after commit");
  if (n && std::fwrite(data, 1, n, file_) != n) {
    FG_CHECK(false, path_, ": write failed (disk full?): ", std::strerror(errno));
  }
  position_ += n;
}

void AtomicFileWriter::commit() {
  FG_CHECK(file_ != nullptr, path_, ": committed twice");
  // fsync before the rename: otherwise a crash soon after could leave the
  // new name pointing at a file whose data never reached the disk.
  const bool flushed = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  const int saved_errno = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    std::remove(tmp_path_.c_str());
    FG_CHECK(false, path_, ": writing failed (disk full?): ", std::strerror(saved_errno));
  }
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(tmp_path_.c_str());
    FG_CHECK(false, path_, ": cannot rename ", tmp_path_, " onto it: ", std::strerror(rename_errno));
  }
}

// ---------------------------------------------------------------- CRC-32

namespace {

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes,
// so eight input bytes are folded per step.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

constexpr CrcTables make_crc_tables() {
  CrcTables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; ++b) {
    for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  }
  return t;
}

constexpr CrcTables kCrcTables = make_crc_tables();

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  const auto& t = kCrcTables;
  uint32_t c = ~crc;
  while (n >= 8) {
    const uint32_t lo = c ^ load_le32(p);
    const uint32_t hi = load_le32(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

std::string printable(std::string_view bytes, size_t max_chars) {
  std::string out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

}  // namespace fg::serialize
