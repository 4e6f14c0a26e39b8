// .pth round trips through fgmoe's own writer and reader: every dtype, shared
// storages, offsets, non-contiguous strides, whole checkpoints, atomic writes.
#include <cmath>
#include <limits>

#include "serialize_test_util.h"

using namespace fg;
using namespace fg::serialize;
using namespace fg::serialize::testing;

namespace {

const DType kAllDTypes[] = {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16,
                            DType::Int32,   DType::Int64,   DType::UInt8,    DType::Bool};

}  // namespace

TEST_CASE("pth: a tensor of every dtype round-trips with its dtype, shape and bytes") {
  ScratchDir dir;
  for (DType dtype : kAllDTypes) {
    INFO("dtype ", dtype_name(dtype));
    const Tensor t = patterned_tensor({2, 3, 4}, dtype);
    const std::string path = dir.file(std::string(dtype_name(dtype)) + ".pth");
    save_tensor_pth(path, t);
    const Tensor back = load_tensor_pth(path);
    check_same_tensor(back, t);
    CHECK(back.device().is_cpu());
    CHECK(back.is_contiguous());
  }
}

TEST_CASE("pth: 0-dim, empty and one-element tensors round-trip") {
  ScratchDir dir;
  for (const Shape& shape : {Shape{}, Shape{0}, Shape{3, 0, 2}, Shape{1}}) {
    INFO("shape ", shape_str(shape));
    const Tensor t = patterned_tensor(shape, DType::Float32);
    save_tensor_pth(dir.file("t.pth"), t);
    check_same_tensor(load_tensor_pth(dir.file("t.pth")), t);
  }
}

TEST_CASE("pth: views of one storage load as views of one shared storage") {
  ScratchDir dir;
  const Tensor base = patterned_tensor({4, 5}, DType::Float32);
  const Tensor transposed = base.transpose(0, 1);  // non-contiguous strides (1, 5)
  const Tensor row = base.select(0, 2);            // storage offset 10
  const Tensor strided = base.slice(1, 1, 5, 2);   // strides (5, 2), offset 1
  const Tensor broadcast = base.select(0, 1).unsqueeze(0).expand({3, 5});  // stride 0

  Value v = Value::dict();
  v.set("base", base);
  v.set("transposed", transposed);
  v.set("row", row);
  v.set("strided", strided);
  v.set("broadcast", broadcast);
  v.set("separate", patterned_tensor({2}, DType::Float32, 3));
  save_pth(dir.file("views.pth"), v);

  const Value back = load_pth(dir.file("views.pth"));
  const Tensor& b = back.at("base").as_tensor();
  for (const char* name : {"base", "transposed", "row", "strided", "broadcast", "separate"}) {
    INFO(name);
    const Tensor& original = v.at(name).as_tensor();
    const Tensor& loaded = back.at(name).as_tensor();
    check_same_tensor(loaded, original);
    CHECK(loaded.strides() == original.strides());
    CHECK(loaded.offset() == original.offset());
    CHECK((loaded.storage() == b.storage()) == (std::string(name) != "separate"));
  }
  // Sharing is real: a write through one view shows through the others.
  b.data<float>()[2 * 5 + 3] = 1234.5f;
  CHECK(back.at("row").as_tensor().to_vector<float>()[3] == 1234.5f);
  CHECK(back.at("transposed").as_tensor().contiguous().to_vector<float>()[3 * 4 + 2] == 1234.5f);
}

TEST_CASE("pth: nested Python values round-trip") {
  ScratchDir dir;
  Value v = Value::dict();
  v.set("none", Value());
  v.set("true", true);
  v.set("false", false);
  Value ints = Value::list();
  for (int64_t x : {int64_t{0}, int64_t{1}, int64_t{255}, int64_t{256}, int64_t{65535},
                    int64_t{65536}, int64_t{-1}, int64_t{-128}, int64_t{-129}, int64_t{INT32_MAX},
                    int64_t{INT32_MIN}, int64_t{INT32_MAX} + 1, int64_t{INT32_MIN} - 1,
                    int64_t{1} << 40, -(int64_t{1} << 40), std::numeric_limits<int64_t>::max(),
                    std::numeric_limits<int64_t>::min(), int64_t{0x7fffff}, int64_t{-0x800000},
                    int64_t{0x800000}, int64_t{-0x800001}}) {
    ints.items().push_back(x);
  }
  v.set("ints", ints);
  v.set("floats", Value::list({0.0, -0.0, 1.5, -3.25e-300, 6.02e23,
                               std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity(),
                               std::numeric_limits<double>::quiet_NaN()}));
  v.set("strings", Value::list({"", "plain", "ünïcödé ✓ 🙂", std::string("nul\0byte", 8)}));
  for (int n = 0; n <= 5; ++n) {
    std::vector<Value> items;
    for (int i = 0; i < n; ++i) items.push_back(i * 10);
    v.set(str_cat("tuple", n), Value::tuple(items));
  }
  Value big = Value::list();
  for (int i = 0; i < 2500; ++i) big.items().push_back(i);  // several APPENDS batches
  v.set("big_list", big);
  Value big_dict = Value::dict();
  for (int i = 0; i < 1500; ++i) big_dict.set(int64_t{i}, std::to_string(i));
  v.set("int_keys", big_dict);
  Value ordered = Value::ordered_dict();
  ordered.set("z", 1);
  ordered.set("a", 2);
  v.set("ordered", ordered);
  v.set("single_item_list", Value::list({Value(7)}));
  v.set("empty_list", Value::list());
  v.set("empty_dict", Value::dict());

  save_pth(dir.file("values.pth"), v);
  const Value back = load_pth(dir.file("values.pth"));
  REQUIRE(back.is_dict());
  CHECK_FALSE(back.as_dict().ordered());
  // Floats compare by bits (NaN, -0.0); everything else through repr.
  const auto& floats = back.at("floats").items();
  const auto& floats_in = v.at("floats").items();
  REQUIRE(floats.size() == floats_in.size());
  for (size_t i = 0; i < floats.size(); ++i) {
    const double a = floats[i].as_float(), b = floats_in[i].as_float();
    CHECK(std::memcmp(&a, &b, 8) == 0);
  }
  CHECK(back.repr() == v.repr());
  CHECK(back.at("ordered").as_dict().ordered());
  CHECK(back.at("tuple1").is_tuple());
  CHECK(back.at("big_list").is_list());
  CHECK(back.at("int_keys").at(int64_t{1499}).as_string() == "1499");
  // Dict order is kept.
  CHECK(std::get<std::string>(back.at("ordered").as_dict().key(0)) == "z");
}

TEST_CASE("pth: state dicts and checkpoints") {
  ScratchDir dir;
  StateDict sd;
  sd.insert("patch_to_embedding.1.weight", patterned_tensor({6, 4}, DType::Float32));
  sd.insert("patch_to_embedding.1.bias", patterned_tensor({6}, DType::Float32, 1));
  sd.insert("encoder.layers.7.gamma_2", patterned_tensor({6}, DType::BFloat16, 2));
  sd.insert("steps", patterned_tensor({}, DType::Int64, 3));

  SUBCASE("a bare state dict keeps its order") {
    save_state_dict_pth(dir.file("sd.pth"), sd);
    const StateDict back = load_state_dict_pth(dir.file("sd.pth"));
    REQUIRE(back.size() == sd.size());
    for (size_t i = 0; i < sd.size(); ++i) {
      CHECK(back.entries()[i].first == sd.entries()[i].first);
      check_same_tensor(back.entries()[i].second, sd.entries()[i].second);
    }
    CHECK(load_pth(dir.file("sd.pth")).as_dict().ordered());
  }
  SUBCASE("a checkpoint with the state dict under 'model' and other entries") {
    for (const char* key : {"model", "state_dict", "model_state"}) {
      Value ckpt = Value::dict();
      ckpt.set("epoch", 3);
      ckpt.set(key, state_dict_to_value(sd));
      Value optimizer = Value::dict();
      Value state = Value::dict();
      Value slot = Value::dict();
      slot.set("step", Tensor::scalar(10.0));
      slot.set("exp_avg", patterned_tensor({6, 4}, DType::Float32, 9));
      state.set(int64_t{0}, slot);
      optimizer.set("state", state);
      Value group = Value::dict();
      group.set("lr", 5e-4);
      group.set("betas", Value::tuple({0.9, 0.999}));
      group.set("params", Value::list({0, 1, 2}));
      optimizer.set("param_groups", Value::list({group}));
      ckpt.set("optimizer", optimizer);
      ckpt.set("config", "MODEL:\n  TYPE: soft_moe\n");
      save_pth(dir.file("ckpt.pth"), ckpt);

      const StateDict back = load_state_dict_pth(dir.file("ckpt.pth"));
      REQUIRE(back.size() == sd.size());
      check_same_tensor(back.at("encoder.layers.7.gamma_2"), sd.at("encoder.layers.7.gamma_2"));
      const Value whole = load_pth(dir.file("ckpt.pth"));
      CHECK(whole.at("optimizer").at("state").at(int64_t{0}).at("step").as_tensor().item() == 10.0);
      CHECK(whole.at("optimizer").at("param_groups").items()[0].at("lr").as_float() == 5e-4);
    }
  }
  SUBCASE("a file that holds no state dict says so") {
    save_tensor_pth(dir.file("t.pth"), sd.at("steps"));
    check_error([&] { load_state_dict_pth(dir.file("t.pth")); }, {"t.pth", "Tensor", "state dict"});
    Value not_sd = Value::dict();
    not_sd.set("epoch", 3);
    save_pth(dir.file("nosd.pth"), not_sd);
    check_error([&] { load_state_dict_pth(dir.file("nosd.pth")); }, {"nosd.pth", "'epoch'", "int"});
    check_error([&] { load_tensor_pth(dir.file("nosd.pth")); }, {"nosd.pth", "not a single tensor"});
  }
}

TEST_CASE("pth: zip64 records round-trip") {
  ScratchDir dir;
  Value v = Value::dict();
  v.set("w", patterned_tensor({3, 3}, DType::Float64));
  v.set("b", patterned_tensor({5}, DType::UInt8));
  save_pth(dir.file("z64.pth"), v, PthSaveOptions{.force_zip64 = true});
  const std::string bytes = read_file(dir.file("z64.pth"));
  CHECK(bytes.find(std::string("PK\x06\x06", 4)) != std::string::npos);
  const Value back = load_pth(dir.file("z64.pth"));
  check_same_tensor(back.at("w").as_tensor(), v.at("w").as_tensor());
  check_same_tensor(back.at("b").as_tensor(), v.at("b").as_tensor());
}

TEST_CASE("pth: storage data is 64-byte aligned in the archive") {
  ScratchDir dir;
  Value v = Value::dict();
  for (int i = 0; i < 5; ++i) v.set(str_cat("t", i), patterned_tensor({i + 1}, DType::Float32, i));
  save_pth(dir.file("a.pth"), v);
  const std::string bytes = read_file(dir.file("a.pth"));
  const auto source = memory_source(bytes.data(), bytes.size(), "a.pth");
  const ZipReader zip(*source);
  int storages = 0;
  for (const ZipEntry& e : zip.entries()) {
    CHECK(e.data_offset % 64 == 0);
    if (e.name.find("/data/") != std::string::npos) ++storages;
  }
  CHECK(storages == 5);
}

TEST_CASE("pth: saving is atomic and reports unwritable paths") {
  ScratchDir dir;
  const std::string path = dir.file("model.pth");
  save_tensor_pth(path, patterned_tensor({4}, DType::Float32));
  const std::string before = read_file(path);

  // A value that cannot be pickled fails before the real file is touched,
  // and no temporary file is left behind.
  Value bad = Value::dict();
  bad.set("w", patterned_tensor({4}, DType::Float32, 1));
  bad.set("name", std::string("\xff\xfe bad utf-8"));
  check_error([&] { save_pth(path, bad); }, {"model.pth", "UTF-8", "['name']"});
  CHECK(read_file(path) == before);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));

  check_error([&] { save_tensor_pth(dir.file("no/such/dir/x.pth"), patterned_tensor({1}, DType::Float32)); },
              {"no/such/dir/x.pth", "cannot create"});
  check_error([&] { load_pth(dir.file("missing.pth")); }, {"missing.pth", "cannot open"});
  check_error([&] { load_pth(dir.path().string()); }, {"directory"});
  // A storage seen as two dtypes cannot be saved (torch cannot load that either).
  const Tensor f = patterned_tensor({4}, DType::Float32);
  const Tensor as_int = Tensor::from_storage(f.storage(), {4}, {1}, 0, DType::Int32);
  Value both = Value::list({f, as_int});
  check_error([&] { save_pth(dir.file("both.pth"), both); }, {"different dtypes"});
  CHECK_FALSE(std::filesystem::exists(dir.file("both.pth")));
}

TEST_CASE("pth: Value basics") {
  Value d = Value::dict();
  d.set("a", 1);
  d.set(int64_t{2}, "two");
  d.set("a", 3.5);  // replaces in place
  CHECK(d.as_dict().size() == 2);
  CHECK(std::get<std::string>(d.as_dict().key(0)) == "a");
  CHECK(d.at("a").as_float() == 3.5);
  CHECK(d.find("missing") == nullptr);
  check_error([&] { d.at("missing"); }, {"'missing'"});
  check_error([&] { d.at("a").as_string(); }, {"expected a str", "float"});
  CHECK(Value(3).as_float() == 3.0);  // ints widen, as Python's float()
  CHECK(Value("x").is_string());
  CHECK(Value(true).is_bool());
  CHECK(Value(uint8_t{7}).as_int() == 7);
  check_error([] { Value(std::numeric_limits<uint64_t>::max()); }, {"64 signed bits"});
  check_error([] { Value undefined{Tensor()}; }, {"undefined tensor"});
  CHECK(Value::tuple({1, "s", Value()}).repr() == "(1, 's', None)");
}
