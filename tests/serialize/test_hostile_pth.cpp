// Corrupt and malicious .pth files: every one must end in an fg::Error with a
// message that names the file and the problem; none may crash, hang or
// allocate what the file merely claims.
#include <random>

#include "serialize_test_util.h"

using namespace fg;
using namespace fg::serialize;
using namespace fg::serialize::testing;
using namespace std::string_literals;

namespace {

// A small checkpoint with tensors of three dtypes, one shared storage and
// plain values, written by fgmoe.
std::string valid_checkpoint_bytes() {
  ScratchDir dir;
  const Tensor w = patterned_tensor({4, 5}, DType::Float32);
  Value sd = Value::ordered_dict();
  sd.set("w", w);
  sd.set("w_t", w.transpose(0, 1));
  sd.set("steps", patterned_tensor({3}, DType::Int64, 1));
  sd.set("mask", patterned_tensor({2, 2}, DType::Bool, 2));
  Value ckpt = Value::dict();
  ckpt.set("model", sd);
  ckpt.set("epoch", 3);
  ckpt.set("lr", 5e-4);
  save_pth(dir.file("ckpt.pth"), ckpt);
  return read_file(dir.file("ckpt.pth"));
}

// Loads bytes; returns "" when they load and equal `expected`'s repr and
// tensor bytes, the fg::Error message when they fail. Any other exception
// escapes and fails the test.
std::string load_outcome(const std::string& bytes, const Value& expected) {
  try {
    const Value v = load_bytes(bytes);
    CHECK(v.repr() == expected.repr());
    const Value& model = v.at("model");
    for (size_t i = 0; i < model.as_dict().size(); ++i) {
      CHECK(tensor_bytes(model.as_dict().value(i).as_tensor()) ==
            tensor_bytes(expected.at("model").as_dict().value(i).as_tensor()));
    }
    return "";
  } catch (const fg::Error& e) {
    return e.what();
  }
}

// ---- hand-made zip pieces, for structures fgmoe's writer never produces ----

std::string local_header(const std::string& name, const std::string& data, uint16_t method = 0,
                         uint16_t flags = 0) {
  std::string h;
  append_le32(h, 0x04034b50);
  append_le16(h, 20);
  append_le16(h, flags);
  append_le16(h, method);
  append_le16(h, 0);
  append_le16(h, 0x21);
  append_le32(h, crc32_update(0, data.data(), data.size()));
  append_le32(h, static_cast<uint32_t>(data.size()));
  append_le32(h, static_cast<uint32_t>(data.size()));
  append_le16(h, static_cast<uint16_t>(name.size()));
  append_le16(h, 0);
  return h + name;
}

std::string central_header(const std::string& name, const std::string& data, uint32_t offset,
                           uint16_t method = 0, uint16_t flags = 0) {
  std::string h;
  append_le32(h, 0x02014b50);
  append_le16(h, 20);
  append_le16(h, 20);
  append_le16(h, flags);
  append_le16(h, method);
  append_le16(h, 0);
  append_le16(h, 0x21);
  append_le32(h, crc32_update(0, data.data(), data.size()));
  append_le32(h, static_cast<uint32_t>(data.size()));
  append_le32(h, static_cast<uint32_t>(data.size()));
  append_le16(h, static_cast<uint16_t>(name.size()));
  append_le16(h, 0);
  append_le16(h, 0);
  append_le16(h, 0);
  append_le16(h, 0);
  append_le32(h, 0);
  append_le32(h, offset);
  return h + name;
}

std::string end_record(uint16_t count, uint32_t directory_size, uint32_t directory_offset) {
  std::string e;
  append_le32(e, 0x06054b50);
  append_le16(e, 0);
  append_le16(e, 0);
  append_le16(e, count);
  append_le16(e, count);
  append_le32(e, directory_size);
  append_le32(e, directory_offset);
  append_le16(e, 0);
  return e;
}

// A simple zip of (name, data) records, with method/flags per record.
struct RawRecord {
  std::string name;
  std::string data;
  uint16_t method = 0;
  uint16_t flags = 0;
};
std::string raw_zip(const std::vector<RawRecord>& records) {
  std::string body, directory;
  for (const auto& r : records) {
    directory += central_header(r.name, r.data, static_cast<uint32_t>(body.size()), r.method, r.flags);
    body += local_header(r.name, r.data, r.method, r.flags) + r.data;
  }
  return body + directory +
         end_record(static_cast<uint16_t>(records.size()), static_cast<uint32_t>(directory.size()),
                    static_cast<uint32_t>(body.size()));
}

const std::string kPickleInt = PickleBuilder().proto().integer(7).stop().bytes();

}  // namespace

TEST_CASE("hostile pth: every truncation of a valid file is a clean error") {
  const std::string bytes = valid_checkpoint_bytes();
  REQUIRE(load_bytes(bytes).at("epoch").as_int() == 3);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    INFO("cut at ", cut, " of ", bytes.size());
    check_error([&] { load_bytes(bytes.substr(0, cut), "cut.pth"); }, {"cut.pth"});
  }
}

TEST_CASE("hostile pth: flipped bytes in the zip directory load the same data or fail cleanly") {
  const std::string bytes = valid_checkpoint_bytes();
  const Value expected = load_bytes(bytes);
  const size_t directory = bytes.find(std::string("PK\x01\x02", 4));
  REQUIRE(directory != std::string::npos);
  int failures = 0;
  for (size_t i = directory; i < bytes.size(); ++i) {
    for (unsigned char mask : {0xffu, 0x01u, 0x80u}) {
      std::string corrupt = bytes;
      corrupt[i] = static_cast<char>(corrupt[i] ^ mask);
      INFO("byte ", i, " ^ ", int(mask));
      const std::string outcome = load_outcome(corrupt, expected);
      if (!outcome.empty()) {
        ++failures;
        CHECK(outcome.find("test.pth") != std::string::npos);
      }
    }
  }
  // Timestamps and attributes may change harmlessly; offsets, sizes,
  // signatures and CRCs may not.
  CHECK(failures > static_cast<int>(bytes.size() - directory));
}

TEST_CASE("hostile pth: random corruption anywhere loads the same data or fails cleanly") {
  const std::string bytes = valid_checkpoint_bytes();
  const Value expected = load_bytes(bytes);
  std::mt19937 rng(20030605);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string corrupt = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      corrupt[rng() % corrupt.size()] = static_cast<char>(rng());
    }
    INFO("trial ", trial);
    load_outcome(corrupt, expected);
  }
  // A flipped data byte is caught by the CRC.
  const size_t data_pkl = bytes.find(std::string("\x80\x02", 2));
  REQUIRE(data_pkl != std::string::npos);
  std::string corrupt = bytes;
  corrupt[data_pkl + 3] ^= 0x20;
  check_error([&] { load_bytes(corrupt); }, {"test.pth", "CRC-32 mismatch", "data.pkl"});
}

TEST_CASE("hostile pth: calls of forbidden globals are refused, naming them") {
  SUBCASE("os.system via GLOBAL and REDUCE") {
    const auto pkl = PickleBuilder().proto().global("os", "system").mark().str("touch /tmp/pwned")
                         .tuple().reduce().stop().bytes();
    check_error([&] { load_bytes(make_pth(pkl)); }, {"test.pth", "os.system"});
  }
  SUBCASE("builtins.eval") {
    const auto pkl = PickleBuilder().proto().global("builtins", "eval").mark().str("1+1").tuple()
                         .reduce().stop().bytes();
    check_error([&] { load_bytes(make_pth(pkl)); }, {"builtins.eval"});
  }
  SUBCASE("posix.system via STACK_GLOBAL (protocol 4)") {
    const auto pkl = PickleBuilder().proto(4).raw("\x8c\x05posix\x8c\x06system\x93")
                         .raw("\x8c\x02ls\x85R.").bytes();
    check_error([&] { load_bytes(make_pth(pkl)); }, {"posix.system"});
  }
  SUBCASE("subprocess.Popen via NEWOBJ") {
    const auto pkl = PickleBuilder().proto().global("subprocess", "Popen").mark().str("ls").tuple()
                         .op(static_cast<unsigned char>(0x81)).stop().bytes();
    check_error([&] { load_bytes(make_pth(pkl)); }, {"subprocess.Popen"});
  }
  SUBCASE("a bare reference to a global") {
    const auto pkl = PickleBuilder().proto().global("os", "system").stop().bytes();
    check_error([&] { load_bytes(make_pth(pkl)); }, {"global os.system"});
  }
  SUBCASE("a forbidden call inside the state dict") {
    PickleBuilder p;
    p.proto().empty_dict().str("model").global("collections", "OrderedDict").empty_tuple().reduce();
    p.mark().str("w").tensor("FloatStorage", "0", 2, 0, {2}, {1});
    p.str("evil").global("os", "system").mark().str("ls").tuple().reduce().setitems();
    p.op('s').stop();
    const std::string file = make_pth(p.bytes(), {{"0", float_bytes({1, 2})}});
    check_error([&] { load_state_dict_pth_from_memory(file.data(), file.size(), "sd.pth"); },
                {"sd.pth", "['model']['evil']", "os.system"});
  }
  SUBCASE("objects outside the state dict are skipped, never built, by load_state_dict_pth") {
    // As a reference training checkpoint: {"model": sd, "config": CfgNode(...)},
    // where the config is a dict subclass pickled with NEWOBJ, SETITEMS and BUILD.
    PickleBuilder p;
    p.proto().empty_dict().mark();
    p.str("config").global("yacs.config", "CfgNode").empty_tuple().op(static_cast<unsigned char>(0x81));
    p.mark().str("MODEL").str("soft_moe").setitems().empty_dict().op('b');
    p.str("model").global("collections", "OrderedDict").empty_tuple().reduce();
    p.mark().str("w").tensor("FloatStorage", "0", 2, 0, {2}, {1}).str("b")
        .tensor("FloatStorage", "0", 2, 1, {1}, {1}).setitems();
    p.setitems().stop();
    const std::string file = make_pth(p.bytes(), {{"0", float_bytes({1.5f, -2.5f})}});
    const StateDict sd = load_state_dict_pth_from_memory(file.data(), file.size(), "ckpt.pth");
    REQUIRE(sd.size() == 2);
    CHECK(sd.at("w").to_vector<float>() == std::vector<float>{1.5f, -2.5f});
    CHECK(sd.at("b").to_vector<float>() == std::vector<float>{-2.5f});
    CHECK(sd.at("b").storage() == sd.at("w").storage());
    check_error([&] { load_bytes(file, "ckpt.pth"); }, {"ckpt.pth", "['config']", "yacs.config.CfgNode"});
  }
}

TEST_CASE("hostile pth: tensor geometry outside its storage is refused") {
  auto load_tensor = [](int64_t numel, int64_t offset, const std::vector<int64_t>& size,
                        const std::vector<int64_t>& stride, size_t record_bytes) {
    const auto pkl = PickleBuilder().proto().tensor("FloatStorage", "0", numel, offset, size, stride)
                         .stop().bytes();
    return load_bytes(make_pth(pkl, {{"0", std::string(record_bytes, '\0')}}));
  };
  CHECK(load_tensor(4, 1, {3}, {1}, 16).as_tensor().numel() == 3);  // the control case loads
  check_error([&] { load_tensor(4, 1, {4}, {1}, 16); }, {"test.pth", "reaches past the end"});
  check_error([&] { load_tensor(4, 0, {5}, {1}, 16); }, {"reaches past the end"});
  check_error([&] { load_tensor(4, 0, {2, 2}, {3, 1}, 16); }, {"reaches past the end"});
  check_error([&] { load_tensor(4, 9, {0}, {1}, 16); }, {"reaches past the end"});
  check_error([&] { load_tensor(100, 0, {4}, {1}, 16); }, {"declares 100 elements", "16 bytes"});
  check_error([&] { load_tensor(4, -1, {4}, {1}, 16); }, {"offset"});
  check_error([&] { load_tensor(4, 0, {-1}, {1}, 16); }, {"size"});
  check_error([&] { load_tensor(4, 0, {2}, {1, 1}, 16); }, {"differ in length"});
  check_error([&] { load_tensor(int64_t{1} << 62, 0, {4}, {1}, 16); }, {"declares"});

  SUBCASE("sizes whose product overflows 64 bits") {
    PickleBuilder p;
    p.proto().global("torch._utils", "_rebuild_tensor_v2").mark();
    p.storage("FloatStorage", "0", 4).integer(0);
    p.mark().long1(int64_t{1} << 40).long1(int64_t{1} << 40).long1(int64_t{1} << 40).tuple();
    p.mark().integer(0).integer(0).integer(0).tuple();
    p.boolean(false).global("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce().stop();
    check_error([&] { load_bytes(make_pth(p.bytes(), {{"0", std::string(16, '\0')}})); },
                {"overflows 64 bits"});
  }
  SUBCASE("a missing storage record") {
    const auto pkl = PickleBuilder().proto().tensor("FloatStorage", "7", 4, 0, {4}, {1}).stop().bytes();
    check_error([&] { load_bytes(make_pth(pkl)); }, {"'data/7' is missing"});
  }
  SUBCASE("one storage key declared with two dtypes") {
    PickleBuilder p;
    p.proto().mark().tensor("FloatStorage", "0", 4, 0, {4}, {1});
    p.tensor("IntStorage", "0", 4, 0, {4}, {1}).tuple().stop();
    check_error([&] { load_bytes(make_pth(p.bytes(), {{"0", std::string(16, '\0')}})); },
                {"declared twice"});
  }
  SUBCASE("storage dtypes fgmoe lacks") {
    const auto pkl = PickleBuilder().proto().tensor("CharStorage", "0", 4, 0, {4}, {1}).stop().bytes();
    check_error([&] { load_bytes(make_pth(pkl, {{"0", std::string(4, '\0')}})); },
                {"torch.CharStorage", "not support"});
  }
  SUBCASE("a persistent id that is not a storage") {
    const auto pkl = PickleBuilder().proto().mark().str("module").str("x").tuple().op('Q').stop().bytes();
    check_error([&] { load_bytes(make_pth(pkl)); }, {"persistent id"});
  }
}

TEST_CASE("hostile pth: bad opcodes and stack misuse") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\x80\x02\xff.", "opcode 0xff"},
      {"\x80\x02I01\n.", "INT (protocol 0)"},
      {"\x80\x02(i__main__\nX\n.", "INST"},
      {"\x80\x02P0\n.", "PERSID"},
      {"\x80\x02\x82\x01.", "EXT"},
      {"\x80\x05\x97.", "NEXT_BUFFER"},
      {"\x80\x06K\x01.", "protocol 6"},
      {"\x80\x02.", "stack underflow"},
      {"\x80\x02t.", "no MARK"},
      {"\x80\x02](K\x01" "a.", "stack underflow"},  // APPEND may not reach below a MARK
      {"\x80\x02K\x01K\x02K\x03s.", "SETITEM on a int"},
      {"\x80\x02}(K\x01u.", "odd number"},
      {"\x80\x02h\x05.", "memo entry 5"},
      {"\x80\x02j\xff\xff\xff\xff.", "memo entry 4294967295"},
      {"\x80\x02q\x00."s, "stack underflow"},
      {"\x80\x02" "2.", "stack underflow"},
      {"\x80\x02K\x01", "without a STOP"},
      {"\x80\x02K\x01)R.", "call of a int"},
      {"\x80\x02K\x01K\x02" "b.", "BUILD on a int"},
      {"\x80\x02]K\x02" "b."s, "BUILD on a list"},
      {"\x80\x02)K\x01" "a.", "APPEND to a tuple"},
      {"\x80\x02" "ccollections\nOrderedDict\n(K\x01tR.", "OrderedDict called with arguments"},
      {"\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)R.", "with 0 arguments"},
      {"\x80\x02" "cos\nsystem", "without a newline"},
      {"\x80\x04\x93.", "stack underflow"},
      {"\x80\x04K\x01K\x02\x93.", "STACK_GLOBAL of non-strings"},
      {"\x80\x02K\x01" "1.", "no MARK"},
  };
  for (const auto& [pickle, needle] : cases) {
    INFO("pickle: ", printable(pickle));
    check_error([&] { load_bytes(make_pth(pickle)); }, {"test.pth", needle});
  }
  // POP of an empty frame drops the mark, as in Python; so this is valid.
  CHECK(load_bytes(make_pth("\x80\x02K\x07(0."s)).as_int() == 7);
}

TEST_CASE("hostile pth: huge declared sizes fail before allocating") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("\x80\x02X\xff\xff\xff\xff", 7) + "abc.", "length of 4294967295"},
      {std::string("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", 11) + "ab.", "runs past the end"},
      {std::string("\x80\x02\x8b\xff\xff\xff\x7f", 7) + "..", "runs past the end"},
      {std::string("\x80\x02\x8b\xff\xff\xff\xff", 7) + "..", "negative length"},
      {std::string("\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x80", 11), "runs past the end"},
      {std::string("\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff", 11) + ".", "FRAME longer"},
      {std::string("\x80\x04\x8c\xff", 4) + "abc.", "runs past the end"},
      {std::string("\x80\x02T\xff\xff\xff\x7f", 7) + "abc.", "runs past the end"},
  };
  for (const auto& [pickle, needle] : cases) {
    INFO("pickle: ", printable(pickle));
    check_error([&] { load_bytes(make_pth(pickle)); }, {"test.pth", needle});
  }
  // An integer beyond 64 bits is read but cannot become a Value.
  check_error([&] {
    load_bytes(make_pth(PickleBuilder().proto().long1(std::string("\x00\x00\x00\x00\x00\x00\x00\x00\x01", 9))
                            .stop().bytes()));
  }, {"beyond 64 bits"});
  // A storage that claims 2^61 elements against a 16-byte record.
  const auto pkl = PickleBuilder().proto().tensor("DoubleStorage", "0", int64_t{1} << 61, 0, {2}, {1})
                       .stop().bytes();
  check_error([&] { load_bytes(make_pth(pkl, {{"0", std::string(16, '\0')}})); }, {"declares"});
}

TEST_CASE("hostile pth: deep nesting and exponential sharing are bounded") {
  SUBCASE("100000 nested lists") {
    const int depth = 100000;
    std::string pkl = "\x80\x02" + std::string(depth, ']') + std::string(depth - 1, 'a') + ".";
    check_error([&] { load_bytes(make_pth(pkl)); }, {"test.pth", "nested more than"});
  }
  SUBCASE("nested tuples through MARK") {
    const int depth = 50000;
    std::string pkl = "\x80\x02" + std::string(depth, '(') + std::string(depth, 't') + ".";
    check_error([&] { load_bytes(make_pth(pkl)); }, {"nested more than"});
  }
  SUBCASE("a list of two references to the previous list, 80 times") {
    std::string pkl = "\x80\x02]q\x00"s;
    for (int i = 0; i < 80; ++i) pkl += "](h\x00h\x00" "eq\x00"s;
    pkl += ".";
    check_error([&] { load_bytes(make_pth(pkl)); }, {"expand to more than"});
  }
  SUBCASE("a list that contains itself") {
    check_error([&] { load_bytes(make_pth("\x80\x02]q\x00h\x00" "a."s)); }, {"nested more than"});
  }
}

TEST_CASE("hostile pth: values fgmoe does not model are named") {
  check_error([&] { load_bytes(make_pth("\x80\x02}(K\x01K\x02\x86K\x03u.")); },
              {"dict key is a tuple"});
  check_error([&] { load_bytes(make_pth("\x80\x03" "C\x03" "abc.")); }, {"bytes"});
  check_error([&] { load_bytes(make_pth("\x80\x04\x8f(K\x01\x90.")); }, {"a set"});
  const auto storage_only = PickleBuilder().proto().storage("FloatStorage", "0", 1).stop().bytes();
  check_error([&] { load_bytes(make_pth(storage_only, {{"0", std::string(4, '\0')}})); },
              {"bare storage"});
}

TEST_CASE("hostile pth: files that are not torch.save zip archives") {
  check_error([] { load_bytes(""); }, {"test.pth", "not a zip archive"});
  check_error([] { load_bytes("hello, world: certainly not a zip archive"); }, {"not a zip archive"});
  check_error([] { load_bytes(std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15)); },
              {"legacy"});
  check_error([] { load_bytes(make_zip({{"archive/other.txt", "x"}})); }, {"without <folder>/data.pkl"});
  check_error([] { load_bytes(make_zip({{"a/data.pkl", kPickleInt}, {"b/data.pkl", kPickleInt}})); },
              {"more than one data.pkl"});
  check_error([] { load_bytes(make_zip({{"a/data.pkl", kPickleInt}, {"a/data.pkl", kPickleInt}})); },
              {"appears twice"});
  check_error([] { load_bytes(make_zip({{"a/data.pkl", kPickleInt}, {"a/byteorder", "big"}})); },
              {"byte order 'big'"});
  // Any folder name works, and zip64 records are read.
  CHECK(load_bytes(make_zip({{"my_masks/data.pkl", kPickleInt}}, true)).as_int() == 7);
}

TEST_CASE("hostile pth: zip structures fgmoe's writer never makes") {
  CHECK(load_bytes(raw_zip({{"x/data.pkl", kPickleInt}})).as_int() == 7);  // the control case
  check_error([] { load_bytes(raw_zip({{"x/data.pkl", kPickleInt, 8}})); }, {"compressed (method 8)"});
  check_error([] { load_bytes(raw_zip({{"x/data.pkl", kPickleInt, 0, 1}})); }, {"encrypted"});

  SUBCASE("an entry whose bytes lie inside another entry's") {
    const std::string inner_name = "x/data.pkl";
    const std::string outer_name = "x/outer";
    const std::string inner = local_header(inner_name, kPickleInt) + kPickleInt;
    std::string body = local_header(outer_name, inner) + inner;
    const auto inner_offset = static_cast<uint32_t>(30 + outer_name.size());
    std::string directory = central_header(outer_name, inner, 0) +
                            central_header(inner_name, kPickleInt, inner_offset);
    const std::string file = body + directory +
                             end_record(2, static_cast<uint32_t>(directory.size()),
                                        static_cast<uint32_t>(body.size()));
    check_error([&] { load_bytes(file); }, {"overlap"});
  }
  SUBCASE("a directory that claims more entries than fit") {
    const std::string ok = raw_zip({{"x/data.pkl", kPickleInt}});
    std::string bad = ok;
    bad[bad.size() - 12] = '\x50';  // total entries in the end record
    bad[bad.size() - 14] = '\x50';  // entries on this disk
    check_error([&] { load_bytes(bad); }, {"cannot fit"});
  }
  SUBCASE("a saturated size without its zip64 field") {
    const std::string name = "x/data.pkl";
    std::string body = local_header(name, kPickleInt) + kPickleInt;
    std::string directory = central_header(name, kPickleInt, 0);
    for (int i = 0; i < 8; ++i) directory[20 + i] = '\xff';  // both sizes 0xffffffff
    const std::string file = body + directory +
                             end_record(1, static_cast<uint32_t>(directory.size()),
                                        static_cast<uint32_t>(body.size()));
    check_error([&] { load_bytes(file); }, {"without a zip64 field"});
  }
  SUBCASE("a zip64 locator pointing outside the file") {
    const std::string ok = make_zip({{"x/data.pkl", kPickleInt}}, true);
    std::string bad = ok;
    const size_t locator = bad.size() - 22 - 20;
    REQUIRE(bad.compare(locator, 4, std::string("PK\x06\x07", 4)) == 0);
    for (int i = 0; i < 8; ++i) bad[locator + 8 + i] = '\x7f';
    check_error([&] { load_bytes(bad); }, {"zip64 locator"});
  }
  SUBCASE("a local header that names another file") {
    std::string file = raw_zip({{"x/data.pkl", kPickleInt}});
    file[30] = 'y';
    check_error([&] { load_bytes(file); }, {"names a different file"});
  }
}
