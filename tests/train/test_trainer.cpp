// The training loop on an in-memory dataset: learning, checkpoints, resume.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/cuda_support.h"
#include "engine/serialize/pth.h"
#include "memory_source.h"
#include "train/trainer.h"

using namespace fg;
using namespace fg::train;
namespace fs = std::filesystem;

namespace {

Config tiny_config(const std::string& out, const std::string& tag) {
  Config c;
  c.merge_json(Json::parse(R"({
    "DATA": {"BATCH_SIZE": 8, "IMG_SIZE": 32},
    "MODEL": {"NUM_CLASSES": 4, "NAME": "tiny", "LABEL_SMOOTHING": 0.1,
              "SOFT_MOE": {"PATCH_SIZE": 8, "EMBED_DIM": 32, "DEPTH": 2, "NUM_HEADS": 2, "MLP_DIM": 48,
                           "MOE_LAYERS": 1, "NUM_EXPERTS": 4, "LAYER_SCALE_LAYERS": [1], "AUX_LAYER": 1}},
    "TRAIN": {"EPOCHS": 10, "WARMUP_EPOCHS": 1, "BASE_LR": 0.5, "WARMUP_LR": 0.001, "MIN_LR": 0.01},
    "AUG": {"MIXUP": 0.0, "CUTMIX": 0.0},
    "PRINT_FREQ": 100, "SAVE_FREQ": 1, "DEVICE": "cpu"})"), "test");
  c.set("OUTPUT", out);
  c.set("TAG", tag);
  return c;
}

// A folder of this process's own, so concurrent test runs do not collide.
std::string scratch_dir(const std::string& name) {
  return (fs::temp_directory_path() / (name + "_" + std::to_string(::getpid()))).string();
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::unique_ptr<BatchSource> train_data() { return std::make_unique<fg::testing::MemorySource>(128, 4, 32, 8, 1); }
std::unique_ptr<BatchSource> val_data() { return std::make_unique<fg::testing::MemorySource>(32, 4, 32, 8, 2, false); }

}  // namespace

TEST_CASE("trainer: learns the tiny task, writes logs, metrics and checkpoints") {
  const std::string out = scratch_dir("fgmoe_trainer_learn");
  fs::remove_all(out);
  Communicator single;
  Trainer trainer(tiny_config(out, "a"), single, train_data(), val_data());
  const EvalResult before = trainer.validate();
  CHECK(trainer.run() == 0);
  const EvalResult after = trainer.validate();
  CHECK(after.acc1 > 60.0);  // chance is 25%
  CHECK(after.loss < before.loss);
  const std::string dir = trainer.output_dir();
  CHECK(fs::exists(dir + "/log.txt"));
  CHECK(fs::exists(dir + "/metrics.jsonl"));
  CHECK(fs::exists(dir + "/config.json"));
  CHECK(fs::exists(dir + "/ckpt_epoch_9.pth"));
  // The checkpoint holds the model state dict under "model", as the reference's.
  const StateDict sd = serialize::load_state_dict_pth(dir + "/ckpt_epoch_9.pth");
  CHECK(sd.contains("encoder.layers.1.gamma_2"));
  const auto ckpt = serialize::load_pth(dir + "/ckpt_epoch_9.pth");
  CHECK(ckpt.at("epoch").as_int() == 9);
  CHECK(ckpt.at("optimizer").at("param_groups").items().size() == 2);
  fs::remove_all(out);
}

TEST_CASE("trainer: an interrupted run resumes to the same final weights") {
  const std::string out = scratch_dir("fgmoe_trainer_resume");
  fs::remove_all(out);
  Communicator single;
  Config whole = tiny_config(out, "whole");
  Trainer a(whole, single, train_data(), val_data());
  REQUIRE(a.run() == 0);
  const StateDict final_a = a.model().state_dict();

  // The same run stopped twice: once in the middle of epoch 1 (after a
  // mid-epoch checkpoint), once in epoch 3; each time resumed from the newest checkpoint.
  Config parts = tiny_config(out, "parts");
  parts.set("SAVE_STEPS", 3);
  for (auto [stop_epoch, stop_step] : {std::pair<int64_t, int64_t>{1, 4}, {3, 6}}) {
    Trainer b(parts, single, train_data(), val_data());
    b.on_step = [&, se = stop_epoch, ss = stop_step](int64_t epoch, int64_t step) {
      if (epoch == se && step == ss) Trainer::request_stop();
    };
    CHECK(b.run() == 130);
  }
  Trainer c(parts, single, train_data(), val_data());
  CHECK(c.run() == 0);
  CHECK(c.state().epoch == 10);
  const StateDict final_c = c.model().state_dict();
  double worst = 0;
  for (const auto& [name, t] : final_a) worst = std::max(worst, max_abs_diff(t, final_c.at(name)));
  CHECK(worst == 0.0);
  fs::remove_all(out);
}

namespace {

// Wraps a source and poisons every image with NaN from a given step on.
class PoisonedSource : public BatchSource {
 public:
  PoisonedSource(std::unique_ptr<BatchSource> inner, int64_t from_step) : inner_(std::move(inner)), from_(from_step) {}
  int64_t steps_per_epoch() const override { return inner_->steps_per_epoch(); }
  int64_t dataset_size() const override { return inner_->dataset_size(); }
  void start_epoch(int64_t epoch, int64_t first) override {
    inner_->start_epoch(epoch, first);
    step_ = first;
  }
  bool next(Batch& b) override {
    if (!inner_->next(b)) return false;
    if (step_++ >= from_) {
      NoGradGuard g;
      b.images = mul(b.images, std::nan(""));
    }
    return true;
  }

 private:
  std::unique_ptr<BatchSource> inner_;
  int64_t from_, step_ = 0;
};

}  // namespace

TEST_CASE("trainer: non-finite steps are skipped, counted, and stop the run when they persist") {
  const std::string out = scratch_dir("fgmoe_trainer_nan");
  fs::remove_all(out);
  Communicator single;
  Config c = tiny_config(out, "nan");
  c.set("TRAIN.MAX_NONFINITE_STEPS", 4);
  Trainer t(c, single, std::make_unique<PoisonedSource>(train_data(), 3), val_data());
  std::vector<Tensor> before;
  int64_t updates_at_poison = -1;
  t.on_step = [&](int64_t epoch, int64_t step) {
    if (epoch == 0 && step == 2) {
      for (auto& [n, p] : t.model().named_parameters()) before.push_back(p.clone());
      updates_at_poison = t.state().updates;
    }
  };
  CHECK_THROWS_WITH_AS(t.run(), doctest::Contains("4 non-finite steps in a row"), Error);
  CHECK(t.state().nonfinite_total == 4);
  // The schedule advanced over the skipped steps (as the reference's), the weights did not;
  // the fourth failure stops the run before it counts.
  CHECK(t.state().updates == updates_at_poison + 3);
  size_t i = 0;
  for (auto& [n, p] : t.model().named_parameters()) CHECK(max_abs_diff(p, before[i++]) == 0.0);
  const std::string log = read_text(t.output_dir() + "/log.txt");
  CHECK(log.find("update skipped") != std::string::npos);
  fs::remove_all(out);
}

TEST_CASE("trainer: host-built targets equal the engine's label-smoothed one-hot, and bad labels are named") {
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{2, 0, 3, 3, 1}, {5});
  for (const double s : {0.0, 0.1, 0.3}) {
    const Tensor expected = add(mul(one_hot(labels, 4), 1.0 - s), s / 4.0);
    const Tensor got = targets_from_labels(labels, 4, s, "batch 7");
    CHECK(got.shape() == Shape{5, 4});
    CHECK(max_abs_diff(got, expected) <= 1e-7);
  }
  CHECK_THROWS_WITH_AS(targets_from_labels(labels, 3, 0.1, "training batch 7 of epoch 2"),
                       doctest::Contains("training batch 7 of epoch 2: label 3 (row 2) is out of range for 3 classes"),
                       Error);
  CHECK_THROWS_WITH_AS(targets_from_labels(Tensor::from_vector(std::vector<int64_t>{-1}, {1}), 3, 0.0, "b"),
                       doctest::Contains("label -1 (row 0)"), Error);
  Batch b;
  b.images = Tensor::zeros({5, 3, 2, 2});
  b.labels = labels;
  CHECK(max_abs_diff(batch_targets(b, 4, 0.1, "b"), targets_from_labels(labels, 4, 0.1, "b")) == 0.0);
  b.targets = Tensor::full({5, 4}, 0.25);
  CHECK(batch_targets(b, 4, 0.1, "b").data_ptr() == b.targets.data_ptr());  // the batch's own
  CHECK_THROWS_WITH_AS(batch_targets(b, 6, 0.1, "val batch 1"),
                       doctest::Contains("val batch 1: soft targets of shape (5, 4) for a batch of 5 and 6 classes"),
                       Error);
}

TEST_CASE("trainer: one read from the device per step, with and without accumulation") {
  for (const int64_t accum : {1, 2}) {
    INFO("accumulation steps: " << accum);
    const std::string out = scratch_dir("fgmoe_trainer_reads");
    fs::remove_all(out);
    Communicator single;
    Config c = tiny_config(out, "reads");
    c.set("TRAIN.EPOCHS", 1);
    c.set("TRAIN.ACCUMULATION_STEPS", accum);
    Trainer t(c, single, train_data(), val_data());
    std::vector<uint64_t> reads;
    t.on_step = [&](int64_t, int64_t) { reads.push_back(host_read_count()); };
    CHECK(t.run() == 0);
    REQUIRE(reads.size() == 16);
    for (size_t i = 1; i < reads.size(); ++i) CHECK(reads[i] - reads[i - 1] == 1);
    fs::remove_all(out);
  }
}

TEST_CASE("trainer: PRECISION bf16 on the CPU says it trains in float32") {
  const std::string out = scratch_dir("fgmoe_trainer_bf16_cpu");
  fs::remove_all(out);
  Communicator single;
  Config c = tiny_config(out, "bf16");
  c.set("PRECISION", "bf16");
  Trainer t(c, single, train_data(), val_data());
  const std::string log = read_text(t.output_dir() + "/log.txt");
  CHECK(log.find("PRECISION bf16 applies to CUDA devices only; training on cpu in float32") != std::string::npos);
  fs::remove_all(out);
}

namespace {

// Trains tiny_config for two epochs with TRAIN.CUDA_GRAPH on or off; returns
// the final weights and leaves the log in *log.
StateDict train_with_graphs(const std::string& device, bool graphs, std::string* log) {
  const std::string out = scratch_dir(std::string("fgmoe_trainer_graph_") + (graphs ? "on" : "off"));
  fs::remove_all(out);
  Communicator single;
  Config c = tiny_config(out, "graph");
  c.set("DEVICE", device);
  c.set("TRAIN.EPOCHS", 2);
  c.set("TRAIN.CUDA_GRAPH", graphs);
  Trainer t(c, single, train_data(), val_data());
  REQUIRE(t.run() == 0);
  StateDict weights;
  for (const auto& [name, p] : t.model().state_dict()) weights.insert(name, p.to(kCPU));
  *log = read_text(t.output_dir() + "/log.txt");
  fs::remove_all(out);
  return weights;
}

}  // namespace

TEST_CASE("trainer: TRAIN.CUDA_GRAPH on the CPU says so and trains as without it") {
  std::string log_on, log_off;
  const StateDict on = train_with_graphs("cpu", true, &log_on);
  const StateDict off = train_with_graphs("cpu", false, &log_off);
  CHECK(log_on.find("TRAIN.CUDA_GRAPH applies to CUDA devices only; training on cpu without graphs") !=
        std::string::npos);
  CHECK(log_off.find("TRAIN.CUDA_GRAPH") == std::string::npos);
  double worst = 0;
  for (const auto& [name, t] : off) worst = std::max(worst, max_abs_diff(t, on.at(name)));
  CHECK(worst == 0.0);
}

TEST_CASE("trainer: on a GPU, TRAIN.CUDA_GRAPH replays steps that train to the eager run's weights") {
  if (!cuda_available()) {
    std::printf("FGMOE_SKIPPED: no CUDA GPU on this machine\n");
    return;
  }
  std::string log_on, log_off;
  const StateDict on = train_with_graphs("cuda", true, &log_on);
  const StateDict off = train_with_graphs("cuda", false, &log_off);
  CHECK(log_on.find("CUDA graphs captured") != std::string::npos);
  CHECK(log_on.find("could not be captured") == std::string::npos);
  // 32 updates with a learning rate of up to 0.5: a replay that drew the
  // capture's dropout masks again or kept its learning rate would be far off;
  // eager and replayed kernels are the same, up to cuBLAS's order of sums.
  double worst = 0;
  for (const auto& [name, t] : off) worst = std::max(worst, max_abs_diff(t, on.at(name)));
  CHECK(worst < 1e-3);
}
