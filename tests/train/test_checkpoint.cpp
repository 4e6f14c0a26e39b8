// Resuming from a damaged checkpoint: whatever entry is wrong (missing, of
// the wrong kind, out of range), the trainer stops with a message naming the
// file and the entry, before it trains a step.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <functional>

#include "engine/serialize/pth.h"
#include "memory_source.h"
#include "train/trainer.h"

using namespace fg;
using namespace fg::train;
using serialize::Value;
namespace fs = std::filesystem;

namespace {

Config tiny(const std::string& out, const std::string& tag) {
  Config c;
  c.merge_json(Json::parse(R"({
    "DATA": {"BATCH_SIZE": 8, "IMG_SIZE": 16},
    "MODEL": {"NUM_CLASSES": 4, "NAME": "tiny",
              "SOFT_MOE": {"PATCH_SIZE": 8, "EMBED_DIM": 16, "DEPTH": 2, "NUM_HEADS": 2, "MLP_DIM": 16,
                           "MOE_LAYERS": 1, "NUM_EXPERTS": 2, "LAYER_SCALE_LAYERS": [1], "AUX_LAYER": 1}},
    "TRAIN": {"EPOCHS": 2, "WARMUP_EPOCHS": 0, "AUTO_RESUME": false},
    "AUG": {"MIXUP": 0.0, "CUTMIX": 0.0},
    "PRINT_FREQ": 100, "SAVE_FREQ": 1, "DEVICE": "cpu"})"), "test");
  c.set("OUTPUT", out);
  c.set("TAG", tag);
  return c;
}

std::unique_ptr<BatchSource> train_data() { return std::make_unique<fg::testing::MemorySource>(16, 4, 16, 8, 1); }
std::unique_ptr<BatchSource> val_data() { return std::make_unique<fg::testing::MemorySource>(8, 4, 16, 8, 2, false); }

Value& entry(Value& v, const std::string& key) {
  Value* found = v.as_dict().find(key);
  REQUIRE(found != nullptr);
  return *found;
}

// The first optimizer state entry (parameter 0's moments and step).
Value& first_state(Value& ckpt) { return entry(entry(ckpt, "optimizer"), "state").as_dict().value(0); }

// The "fgmoe" dict less one key.
Value without(const Value& dict, const std::string& dropped) {
  Value out = Value::dict();
  const auto& d = dict.as_dict();
  for (size_t i = 0; i < d.size(); ++i)
    if (!(std::get_if<std::string>(&d.key(i)) && *std::get_if<std::string>(&d.key(i)) == dropped))
      out.set(d.key(i), d.value(i));
  return out;
}

struct Damage {
  std::string what;     // for the report
  std::string message;  // what the error must say besides the file's name
  std::function<void(Value&)> apply;
};

}  // namespace

TEST_CASE("checkpoint: resuming from a damaged checkpoint names the file and the entry") {
  const std::string out = (fs::temp_directory_path() / ("fgmoe_ckpt_damage_" + std::to_string(::getpid()))).string();
  fs::remove_all(out);
  Communicator single;
  Config source = tiny(out, "source");
  source.set("TRAIN.EPOCHS", 1);
  Trainer writer(source, single, train_data(), val_data());
  REQUIRE(writer.run() == 0);
  const std::string good = writer.output_dir() + "/ckpt_epoch_0.pth";
  REQUIRE(fs::exists(good));

  const std::vector<Damage> damages = {
      {"epoch as text", "checkpoint entry 'epoch': expected an int, got a str",
       [](Value& c) { c.set("epoch", "three"); }},
      {"negative epoch", "checkpoint entry 'epoch': expected a count, got -1", [](Value& c) { c.set("epoch", -1); }},
      {"epoch near int64's end", "checkpoint entry 'epoch': expected a count",
       [](Value& c) { c.set("epoch", int64_t{1} << 62); }},
      {"max_accuracy as a list", "checkpoint entry 'max_accuracy'",
       [](Value& c) { c.set("max_accuracy", Value::list()); }},
      {"negative next_step", "checkpoint entry 'fgmoe.next_step': expected a count, got -3",
       [](Value& c) { entry(c, "fgmoe").set("next_step", -3); }},
      {"no updates", "checkpoint entry 'fgmoe.updates': dict has no key 'updates'",
       [](Value& c) { c.set("fgmoe", without(entry(c, "fgmoe"), "updates")); }},
      {"epoch_finished as an int", "checkpoint entry 'fgmoe.epoch_finished'",
       [](Value& c) { entry(c, "fgmoe").set("epoch_finished", 1); }},
      {"generator seed not a number", "checkpoint entry 'fgmoe.dropout_generator': expected an unsigned 64-bit",
       [](Value& c) { entry(c, "fgmoe").set("dropout_generator", Value::tuple({Value("12x"), Value("0")})); }},
      {"generator seed past 64 bits", "checkpoint entry 'fgmoe.dropout_generator': expected an unsigned 64-bit",
       [](Value& c) {
         entry(c, "fgmoe").set("dropout_generator", Value::tuple({Value("18446744073709551616"), Value("0")}));
       }},
      {"generator with one value", "checkpoint entry 'fgmoe.dropout_generator': expected (seed, offset), got 1",
       [](Value& c) { entry(c, "fgmoe").set("dropout_generator", Value::tuple({Value("1")})); }},
      {"optimizer step NaN", "checkpoint entry 'optimizer': the step of parameter 0 is nan",
       [](Value& c) { first_state(c).set("step", Tensor::scalar(std::nan(""))); }},
      {"optimizer step of two values", "checkpoint entry 'optimizer': the step of parameter 0 has 2 values",
       [](Value& c) { first_state(c).set("step", Tensor::zeros({2})); }},
      {"optimizer step 1e30", "checkpoint entry 'optimizer': the step of parameter 0 is 1e+30",
       [](Value& c) { first_state(c).set("step", Tensor::scalar(1e30)); }},
      {"optimizer moment of another shape", "checkpoint entry 'optimizer': optimizer exp_avg of parameter 0 has shape",
       [](Value& c) { first_state(c).set("exp_avg", Tensor::zeros({3})); }},
      {"optimizer without param_groups", "checkpoint entry 'optimizer': dict has no key 'param_groups'",
       [](Value& c) {
         Value opt = Value::dict();
         opt.set("state", entry(entry(c, "optimizer"), "state"));
         c.set("optimizer", opt);
       }},
  };
  for (size_t i = 0; i < damages.size(); ++i) {
    const Damage& d = damages[i];
    CAPTURE(d.what);
    Value ckpt = serialize::load_pth(good);
    d.apply(ckpt);
    const std::string damaged = out + "/damaged_" + std::to_string(i) + ".pth";
    serialize::save_pth(damaged, ckpt);
    Config resume = tiny(out, "resume_" + std::to_string(i));
    resume.set("MODEL.RESUME", damaged);
    Trainer trainer(resume, single, train_data(), val_data());
    std::string message = "no error";
    try {
      trainer.run();
    } catch (const Error& e) {
      message = e.what();
    }
    CHECK_MESSAGE(message.find(damaged + ": " + d.message) != std::string::npos, message);
    CHECK_FALSE(fs::exists(trainer.output_dir() + "/ckpt_epoch_1.pth"));  // nothing trained
  }
  // The undamaged file resumes and finishes the second epoch.
  Config resume = tiny(out, "resume_good");
  resume.set("MODEL.RESUME", good);
  Trainer trainer(resume, single, train_data(), val_data());
  CHECK(trainer.run() == 0);
  CHECK(fs::exists(trainer.output_dir() + "/ckpt_epoch_1.pth"));
  fs::remove_all(out);
}
