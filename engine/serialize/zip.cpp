#include "engine/serialize/zip.h"

#include <algorithm>

namespace fg::serialize {

namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;

constexpr uint64_t kLocalHeaderSize = 30;
constexpr uint64_t kCentralHeaderSize = 46;
constexpr uint64_t kEndSize = 22;
constexpr uint64_t kZip64EndSize = 56;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kMaxCommentSize = 0xffff;

constexpr uint16_t kZip64ExtraId = 0x0001;
// The id torch gives its alignment padding ("FB"); readers skip unknown ids.
constexpr uint16_t kPaddingExtraId = 0x4246;

constexpr uint32_t kSaturated32 = 0xffffffffu;
constexpr uint16_t kSaturated16 = 0xffffu;

constexpr uint16_t kFlagEncrypted = 1 << 0;
constexpr uint16_t kFlagUtf8 = 1 << 11;

const unsigned char* as_bytes(const std::string& s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

// ---------------------------------------------------------------- reader

ZipReader::ZipReader(const ByteSource& source) : source_(source) { parse(); }

void ZipReader::parse() {
  const std::string& name = source_.name();
  const uint64_t file_size = source_.size();
  FG_CHECK(file_size >= kEndSize, name, ": not a zip archive (only ", file_size,
           " bytes; torch.save files are zip archives)");

  // The end record sits at the very end, followed only by its comment; find the
  // last signature whose comment length matches the bytes that follow it.
  const uint64_t tail_size = std::min(file_size, kEndSize + kMaxCommentSize);
  const uint64_t tail_start = file_size - tail_size;
  const std::string tail = source_.read_string(tail_start, tail_size);
  const auto* t = as_bytes(tail);
  int64_t end_pos = -1;
  for (int64_t i = static_cast<int64_t>(tail_size - kEndSize); i >= 0; --i) {
    if (load_le32(t + i) == kEndSignature &&
        static_cast<uint64_t>(i) + kEndSize + load_le16(t + i + 20) == tail_size) {
      end_pos = i;
      break;
    }
  }
  FG_CHECK(end_pos >= 0, name,
           ": not a zip archive or truncated (no end-of-central-directory record)");
  const unsigned char* end = t + end_pos;
  const uint64_t end_offset = tail_start + static_cast<uint64_t>(end_pos);
  FG_CHECK(load_le16(end + 4) == 0 && load_le16(end + 6) == 0, name,
           ": multi-disk zip archives are not supported");
  uint64_t entry_count = load_le16(end + 10);
  uint64_t directory_size = load_le32(end + 12);
  uint64_t directory_offset = load_le32(end + 16);
  FG_CHECK(load_le16(end + 8) == load_le16(end + 10), name,
           ": corrupt end-of-central-directory record (entry counts disagree)");
  uint64_t directory_limit = end_offset;  // the directory must end before this

  // A zip64 locator right before the end record points at the zip64 end
  // record, whose 64-bit fields replace the (then saturated) 32-bit ones.
  const bool saturated = entry_count == kSaturated16 || directory_size == kSaturated32 ||
                         directory_offset == kSaturated32;
  bool have_zip64 = false;
  if (end_offset >= kZip64LocatorSize) {
    unsigned char locator[kZip64LocatorSize];
    source_.read(end_offset - kZip64LocatorSize, locator, kZip64LocatorSize);
    if (load_le32(locator) == kZip64LocatorSignature) {
      have_zip64 = true;
      const uint64_t z64_offset = load_le64(locator + 8);
      const uint64_t locator_offset = end_offset - kZip64LocatorSize;
      FG_CHECK(z64_offset <= locator_offset && locator_offset - z64_offset >= kZip64EndSize, name,
               ": corrupt zip64 locator (zip64 end record offset ", z64_offset, " out of range)");
      unsigned char z64[kZip64EndSize];
      source_.read(z64_offset, z64, kZip64EndSize);
      FG_CHECK(load_le32(z64) == kZip64EndSignature, name,
               ": corrupt zip64 end-of-central-directory record (bad signature)");
      const uint64_t z64_entries = load_le64(z64 + 32);
      const uint64_t z64_size = load_le64(z64 + 40);
      const uint64_t z64_directory = load_le64(z64 + 48);
      FG_CHECK(load_le64(z64 + 24) == z64_entries, name,
               ": corrupt zip64 end record (entry counts disagree)");
      // Where the 32-bit fields are not saturated they must tell the same story.
      FG_CHECK((entry_count == kSaturated16 || entry_count == z64_entries) &&
                   (directory_size == kSaturated32 || directory_size == z64_size) &&
                   (directory_offset == kSaturated32 || directory_offset == z64_directory),
               name, ": corrupt zip archive (zip64 and classic end records disagree)");
      entry_count = z64_entries;
      directory_size = z64_size;
      directory_offset = z64_directory;
      directory_limit = z64_offset;
    }
  }
  FG_CHECK(have_zip64 || !saturated, name,
           ": corrupt zip archive (saturated end record without a zip64 record)");
  FG_CHECK(directory_offset <= directory_limit && directory_size <= directory_limit - directory_offset,
           name, ": corrupt zip archive (central directory at ", directory_offset, ", ",
           directory_size, " bytes, does not fit before byte ", directory_limit, ")");
  FG_CHECK(entry_count <= directory_size / kCentralHeaderSize, name, ": corrupt zip archive (",
           entry_count, " entries cannot fit in a central directory of ", directory_size,
           " bytes)");

  const std::string directory = source_.read_string(directory_offset, directory_size);
  const auto* d = as_bytes(directory);
  uint64_t pos = 0;
  entries_.reserve(entry_count);
  for (uint64_t i = 0; i < entry_count; ++i) {
    FG_CHECK(directory_size - pos >= kCentralHeaderSize &&
                 load_le32(d + pos) == kCentralHeaderSignature,
             name, ": corrupt zip central directory (entry ", i, " at byte ",
             directory_offset + pos, " has no valid header)");
    const unsigned char* h = d + pos;
    ZipEntry e;
    e.flags = load_le16(h + 8);
    e.method = load_le16(h + 10);
    e.crc32 = load_le32(h + 16);
    uint64_t compressed_size = load_le32(h + 20);
    uint64_t size = load_le32(h + 24);
    const uint64_t name_len = load_le16(h + 28);
    const uint64_t extra_len = load_le16(h + 30);
    const uint64_t comment_len = load_le16(h + 32);
    uint64_t disk = load_le16(h + 34);
    uint64_t header_offset = load_le32(h + 42);
    FG_CHECK(directory_size - pos - kCentralHeaderSize >= name_len + extra_len + comment_len, name,
             ": corrupt zip central directory (entry ", i, " runs past its end)");
    e.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_len);

    // The zip64 extra field holds, in this order, exactly the values whose
    // 32-bit fields are saturated.
    const unsigned char* extra = h + kCentralHeaderSize + name_len;
    bool have_zip64_field = false;
    for (uint64_t x = 0; x < extra_len;) {
      FG_CHECK(extra_len - x >= 4, name, ": corrupt extra field in zip entry '",
               printable(e.name), "'");
      const uint16_t id = load_le16(extra + x);
      const uint64_t len = load_le16(extra + x + 2);
      FG_CHECK(extra_len - x - 4 >= len, name, ": corrupt extra field in zip entry '",
               printable(e.name), "'");
      if (id == kZip64ExtraId) {
        have_zip64_field = true;
        const unsigned char* z = extra + x + 4;
        uint64_t used = 0;
        auto take = [&](uint64_t& field) {
          FG_CHECK(len - used >= 8, name, ": corrupt zip64 field in zip entry '",
                   printable(e.name), "'");
          field = load_le64(z + used);
          used += 8;
        };
        if (size == kSaturated32) take(size);
        if (compressed_size == kSaturated32) take(compressed_size);
        if (header_offset == kSaturated32) take(header_offset);
        if (disk == kSaturated16 && len - used >= 4) disk = load_le32(z + used);
      }
      x += 4 + len;
    }
    FG_CHECK(have_zip64_field || (size != kSaturated32 && compressed_size != kSaturated32 &&
                                  header_offset != kSaturated32),
             name, ": corrupt zip entry '", printable(e.name),
             "' (saturated sizes or offset without a zip64 field)");
    FG_CHECK(disk == 0, name, ": multi-disk zip archives are not supported");
    pos += kCentralHeaderSize + name_len + extra_len + comment_len;

    FG_CHECK(e.method != 0 || compressed_size == size, name, ": corrupt zip entry '",
             printable(e.name), "' (stored, but its sizes differ: ", compressed_size, " vs ", size,
             ")");
    // The local header repeats the name; its own extra field decides where
    // the data begins.
    FG_CHECK(header_offset <= directory_offset &&
                 directory_offset - header_offset >= kLocalHeaderSize + name_len,
             name, ": corrupt zip entry '", printable(e.name), "' (local header offset ",
             header_offset, " out of range)");
    unsigned char local[kLocalHeaderSize];
    source_.read(header_offset, local, kLocalHeaderSize);
    FG_CHECK(load_le32(local) == kLocalHeaderSignature, name, ": corrupt zip entry '",
             printable(e.name), "' (no local header at byte ", header_offset, ")");
    const uint64_t local_name_len = load_le16(local + 26);
    const uint64_t local_extra_len = load_le16(local + 28);
    FG_CHECK(local_name_len == name_len &&
                 source_.read_string(header_offset + kLocalHeaderSize, name_len) == e.name,
             name, ": corrupt zip entry '", printable(e.name),
             "' (local header names a different file)");
    e.header_offset = header_offset;
    e.data_offset = header_offset + kLocalHeaderSize + name_len + local_extra_len;
    e.size = compressed_size;
    FG_CHECK(e.data_offset <= directory_offset && e.size <= directory_offset - e.data_offset, name,
             ": corrupt zip entry '", printable(e.name), "' (", e.size, " bytes at byte ",
             e.data_offset, " run past the start of the central directory)");
    FG_CHECK(by_name_.emplace(e.name, entries_.size()).second, name,
             ": corrupt zip archive (entry '", printable(e.name), "' appears twice)");
    entries_.push_back(std::move(e));
  }

  // Entries may not share bytes: otherwise a small file could name the same
  // large region many times and make a reader allocate far more than its size.
  std::vector<const ZipEntry*> by_offset;
  for (const auto& e : entries_) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipEntry* a, const ZipEntry* b) { return a->header_offset < b->header_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipEntry& prev = *by_offset[i - 1];
    FG_CHECK(prev.data_offset + prev.size <= by_offset[i]->header_offset, name,
             ": corrupt zip archive (entries '", printable(prev.name), "' and '",
             printable(by_offset[i]->name), "' overlap)");
  }
}

const ZipEntry* ZipReader::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

void ZipReader::read(const ZipEntry& entry, void* dst) const {
  FG_CHECK(!(entry.flags & kFlagEncrypted), name(), ": zip entry '", printable(entry.name),
           "' is encrypted");
  FG_CHECK(entry.method == 0, name(), ": zip entry '", printable(entry.name),
           "' is compressed (method ", entry.method,
           "); fgmoe reads uncompressed entries, as torch.save writes them");
  source_.read(entry.data_offset, dst, entry.size);
  const uint32_t crc = crc32_update(0, dst, entry.size);
  FG_CHECK(crc == entry.crc32, name(), ": zip entry '", printable(entry.name),
           "' is corrupt (CRC-32 mismatch)");
}

std::string ZipReader::read_string(const ZipEntry& entry) const {
  std::string out(entry.size, '\0');  // entry.size was checked against the input size
  read(entry, out.data());
  return out;
}

// ---------------------------------------------------------------- writer

void ZipWriter::add(const std::string& name, const void* data, uint64_t size) {
  FG_CHECK(!finished_, out_.path(), ": zip entry added after finish");
  FG_CHECK(name.size() <= 0xffff, out_.path(), ": zip entry name too long");
  const uint32_t crc = crc32_update(0, data, size);
  const uint64_t header_offset = out_.position();
  const bool zip64 = force_zip64_ || size >= kSaturated32;

  std::string header;
  std::string extra;
  if (zip64) {  // the local zip64 field carries both sizes
    append_le16(extra, kZip64ExtraId);
    append_le16(extra, 16);
    append_le64(extra, size);
    append_le64(extra, size);
  }
  // Pad with a private extra field so that the data starts on a 64-byte
  // boundary, as torch does (it lets readers map tensors in place).
  const uint64_t unpadded = header_offset + kLocalHeaderSize + name.size() + extra.size() + 4;
  const uint64_t pad = (kAlignment - unpadded % kAlignment) % kAlignment;
  append_le16(extra, kPaddingExtraId);
  append_le16(extra, static_cast<uint16_t>(pad));
  extra.append(pad, 'Z');

  append_le32(header, kLocalHeaderSignature);
  append_le16(header, zip64 ? 45 : 20);  // version needed: 4.5 for zip64
  append_le16(header, kFlagUtf8);
  append_le16(header, 0);       // stored
  append_le16(header, 0);       // time 00:00:00
  append_le16(header, 0x0021);  // date 1980-01-01: fixed, so equal inputs give equal files
  append_le32(header, crc);
  append_le32(header, zip64 ? kSaturated32 : static_cast<uint32_t>(size));
  append_le32(header, zip64 ? kSaturated32 : static_cast<uint32_t>(size));
  append_le16(header, static_cast<uint16_t>(name.size()));
  append_le16(header, static_cast<uint16_t>(extra.size()));
  header += name;
  header += extra;
  out_.write(header);
  out_.write(data, size);
  written_.push_back({name, header_offset, size, crc});
}

void ZipWriter::finish() {
  FG_CHECK(!finished_, out_.path(), ": zip finished twice");
  finished_ = true;
  const uint64_t directory_offset = out_.position();
  std::string directory;
  for (const Written& w : written_) {
    const bool big_size = force_zip64_ || w.size >= kSaturated32;
    const bool big_offset = force_zip64_ || w.header_offset >= kSaturated32;
    std::string extra;
    if (big_size || big_offset) {
      append_le16(extra, kZip64ExtraId);
      append_le16(extra, static_cast<uint16_t>((big_size ? 16 : 0) + (big_offset ? 8 : 0)));
      if (big_size) {
        append_le64(extra, w.size);
        append_le64(extra, w.size);
      }
      if (big_offset) append_le64(extra, w.header_offset);
    }
    append_le32(directory, kCentralHeaderSignature);
    append_le16(directory, extra.empty() ? 20 : 45);  // version made by
    append_le16(directory, extra.empty() ? 20 : 45);  // version needed
    append_le16(directory, kFlagUtf8);
    append_le16(directory, 0);
    append_le16(directory, 0);
    append_le16(directory, 0x0021);
    append_le32(directory, w.crc32);
    append_le32(directory, big_size ? kSaturated32 : static_cast<uint32_t>(w.size));
    append_le32(directory, big_size ? kSaturated32 : static_cast<uint32_t>(w.size));
    append_le16(directory, static_cast<uint16_t>(w.name.size()));
    append_le16(directory, static_cast<uint16_t>(extra.size()));
    append_le16(directory, 0);  // comment
    append_le16(directory, 0);  // disk
    append_le16(directory, 0);  // internal attributes
    append_le32(directory, 0);  // external attributes
    append_le32(directory, big_offset ? kSaturated32 : static_cast<uint32_t>(w.header_offset));
    directory += w.name;
    directory += extra;
  }
  out_.write(directory);

  const uint64_t count = written_.size();
  const uint64_t directory_size = directory.size();
  const bool zip64 = force_zip64_ || count >= kSaturated16 || directory_size >= kSaturated32 ||
                     directory_offset >= kSaturated32;
  std::string tail;
  if (zip64) {
    const uint64_t z64_offset = out_.position();
    append_le32(tail, kZip64EndSignature);
    append_le64(tail, kZip64EndSize - 12);  // the record's size after this field
    append_le16(tail, 45);
    append_le16(tail, 45);
    append_le32(tail, 0);
    append_le32(tail, 0);
    append_le64(tail, count);
    append_le64(tail, count);
    append_le64(tail, directory_size);
    append_le64(tail, directory_offset);
    append_le32(tail, kZip64LocatorSignature);
    append_le32(tail, 0);
    append_le64(tail, z64_offset);
    append_le32(tail, 1);  // total disks
  }
  append_le32(tail, kEndSignature);
  append_le16(tail, 0);
  append_le16(tail, 0);
  append_le16(tail, zip64 ? kSaturated16 : static_cast<uint16_t>(count));
  append_le16(tail, zip64 ? kSaturated16 : static_cast<uint16_t>(count));
  append_le32(tail, zip64 ? kSaturated32 : static_cast<uint32_t>(directory_size));
  append_le32(tail, zip64 ? kSaturated32 : static_cast<uint32_t>(directory_offset));
  append_le16(tail, 0);  // comment
  out_.write(tail);
}

}  // namespace fg::serialize
