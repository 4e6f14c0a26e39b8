// The zip container of torch.save files: a reader for uncompressed (stored)
// entries with zip64 support, and a writer that lays entries out as torch
// does (stored, data aligned to 64 bytes). Internal to engine/serialize.
//
// The reader trusts nothing: every size and offset in the directory is
// checked against the input before it is used, entries may not overlap (so
// the bytes handed out never exceed the input's size), and entry data is
// verified against its CRC-32.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/serialize/byte_io.h"

namespace fg::serialize {

struct ZipEntry {
  std::string name;
  uint64_t header_offset = 0;  // of the local file header
  uint64_t data_offset = 0;    // of the stored bytes
  uint64_t size = 0;           // stored (= uncompressed) size
  uint32_t crc32 = 0;
  uint16_t method = 0;  // 0: stored
  uint16_t flags = 0;
};

class ZipReader {
 public:
  // Parses and validates the central directory of source (kept by reference).
  explicit ZipReader(const ByteSource& source);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(std::string_view name) const;
  // Copies the entry's bytes into dst (entry.size bytes) and checks its CRC.
  void read(const ZipEntry& entry, void* dst) const;
  std::string read_string(const ZipEntry& entry) const;
  const std::string& name() const { return source_.name(); }

 private:
  void parse();
  const ByteSource& source_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> by_name_;
};

class ZipWriter {
 public:
  // force_zip64 writes zip64 fields even when the sizes do not need them
  // (they do beyond 4 GiB); it lets tests cover that path with small files.
  explicit ZipWriter(AtomicFileWriter& out, bool force_zip64 = false)
      : out_(out), force_zip64_(force_zip64) {}

  // Appends a stored entry whose data starts on a 64-byte boundary.
  void add(const std::string& name, const void* data, uint64_t size);
  // Writes the central directory; no entry may be added afterwards.
  void finish();

  static constexpr uint64_t kAlignment = 64;

 private:
  struct Written {
    std::string name;
    uint64_t header_offset;
    uint64_t size;
    uint32_t crc32;
  };
  AtomicFileWriter& out_;
  bool force_zip64_;
  bool finished_ = false;
  std::vector<Written> written_;
};

}  // namespace fg::serialize
