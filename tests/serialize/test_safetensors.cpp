// safetensors: round trips, and headers that lie.
#include <nlohmann/json.hpp>

#include "serialize_test_util.h"

using namespace fg;
using namespace fg::serialize;
using namespace fg::serialize::testing;

namespace {

SafetensorsContents read_bytes(const std::string& bytes, const std::string& name = "w.safetensors") {
  return read_safetensors_from_memory(bytes.data(), bytes.size(), name);
}

}  // namespace

TEST_CASE("safetensors: every dtype, metadata and order round-trip") {
  ScratchDir dir;
  StateDict sd;
  const DType dtypes[] = {DType::Bool,  DType::Float32, DType::UInt8, DType::Float64,
                          DType::Int32, DType::BFloat16, DType::Int64, DType::Float16};
  int seed = 0;
  for (DType dtype : dtypes) {
    sd.insert(str_cat("t.", dtype_name(dtype)), patterned_tensor({3, 5}, dtype, seed++));
  }
  sd.insert("scalar", patterned_tensor({}, DType::Float32, 9));
  sd.insert("empty", patterned_tensor({0, 4}, DType::Float32));
  sd.insert("transposed", patterned_tensor({4, 6}, DType::Float32, 3).transpose(0, 1));
  const std::string path = dir.file("w.safetensors");
  save_safetensors(path, sd, {{"format", "pt"}, {"note", "fgmoe ✓"}});

  const SafetensorsContents back = read_safetensors(path);
  REQUIRE(back.tensors.size() == sd.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    INFO(sd.entries()[i].first);
    CHECK(back.tensors.entries()[i].first == sd.entries()[i].first);
    check_same_tensor(back.tensors.entries()[i].second, sd.entries()[i].second);
  }
  CHECK(back.metadata == std::vector<std::pair<std::string, std::string>>{{"format", "pt"},
                                                                           {"note", "fgmoe ✓"}});
  CHECK(load_safetensors(path).size() == sd.size());

  // The layout: header length, header padded to 8 bytes, each tensor's data
  // aligned to its element size.
  const std::string bytes = read_file(path);
  const uint64_t header_size = load_le64(reinterpret_cast<const unsigned char*>(bytes.data()));
  CHECK((8 + header_size) % 8 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(8, header_size));
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const uint64_t begin = info["data_offsets"][0];
    CHECK(begin % dtype_size(back.tensors.at(name).dtype()) == 0);
  }
}

TEST_CASE("safetensors: an empty state dict and saving errors") {
  ScratchDir dir;
  save_safetensors(dir.file("empty.safetensors"), StateDict());
  CHECK(load_safetensors(dir.file("empty.safetensors")).empty());

  StateDict bad;
  bad.insert("__metadata__", patterned_tensor({1}, DType::Float32));
  check_error([&] { save_safetensors(dir.file("bad.safetensors"), bad); }, {"__metadata__"});
  StateDict bad_name;
  bad_name.insert("\xff\xfe", patterned_tensor({1}, DType::Float32));
  check_error([&] { save_safetensors(dir.file("bad.safetensors"), bad_name); }, {"UTF-8"});
  CHECK_FALSE(std::filesystem::exists(dir.file("bad.safetensors")));
  CHECK_FALSE(std::filesystem::exists(dir.file("bad.safetensors.tmp")));
  check_error([&] { save_safetensors(dir.file("x.safetensors"), StateDict(), {{"k", "1"}, {"k", "2"}}); },
              {"'k' given twice"});
  check_error([&] { load_safetensors(dir.file("missing.safetensors")); }, {"missing.safetensors"});
}

TEST_CASE("safetensors: every truncation is a clean error") {
  ScratchDir dir;
  StateDict sd;
  sd.insert("a", patterned_tensor({2, 3}, DType::Float32));
  sd.insert("b", patterned_tensor({5}, DType::Int64));
  save_safetensors(dir.file("w.safetensors"), sd);
  const std::string bytes = read_file(dir.file("w.safetensors"));
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    INFO("cut at ", cut);
    check_error([&] { read_bytes(bytes.substr(0, cut)); }, {"w.safetensors"});
  }
}

TEST_CASE("safetensors: headers that lie are refused") {
  const std::string data16(16, '\x01');
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  CHECK(read_bytes(make_safetensors(ok, data16)).tensors.at("a").numel() == 4);  // control case

  // Header length beyond the file, or absurd.
  std::string too_long = make_safetensors(ok, data16);
  too_long[0] = '\x7f';
  too_long[1] = '\x7f';
  check_error([&] { read_bytes(too_long); }, {"w.safetensors", "header claims"});
  std::string huge = make_safetensors(ok, data16);
  for (int i = 0; i < 8; ++i) huge[i] = '\xff';
  check_error([&] { read_bytes(huge); }, {"header claims"});
  check_error([&] { read_bytes("abc"); }, {"not a safetensors file"});

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1,2,3]", "does not start with '{'"},
      {"{\"a\": ", "not valid JSON"},
      {"{\"a\":1}", "is not an object"},
      {R"({"a":{"shape":[4],"data_offsets":[0,16]}})", "no dtype"},
      {R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", "no shape"},
      {R"({"a":{"dtype":"F32","shape":[4]}})", "no data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", "no data_offsets"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[-1,16]}})", "no data_offsets"},
      {R"({"a":{"dtype":"X99","shape":[4],"data_offsets":[0,16]}})", "not a safetensors dtype"},
      {R"({"a":{"dtype":"I8","shape":[16],"data_offsets":[0,16]}})", "I8 is not supported"},
      {R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", "non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[2.0,2],"data_offsets":[0,16]}})", "non-negative integer"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", "span 16"},
      {R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", "do not lie within"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})", "do not lie within"},
      {R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})",
       "more than 2^64"},
      {R"({"a":{"dtype":"F32","shape":[1073741824,16],"data_offsets":[0,16]}})", "span 16"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       "overlaps"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", "hole"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "8 bytes that no tensor uses"},
      {R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
       "not a string"},
      {R"({"__metadata__":[],"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
       "is not an object"},
      {"{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", "nests deeper"},
  };
  for (const auto& [header, needle] : cases) {
    INFO("header: ", header.substr(0, 200));
    check_error([&] { read_bytes(make_safetensors(header, data16)); }, {"w.safetensors", needle});
  }
  // Trailing spaces pad a header legally; zero-sized tensors sit at the running offset.
  const auto padded = read_bytes(make_safetensors(
      R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
      R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})" "   ",
      data16));
  CHECK(padded.tensors.size() == 2);
  CHECK(padded.tensors.entries()[0].first == "z");
}
