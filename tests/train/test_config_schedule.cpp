#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "train/config.h"
#include "train/schedule.h"

using namespace fg;
using namespace fg::train;

TEST_CASE("schedule: warm-up, peak and end against hand-computed values") {
  CosineSchedule s;
  s.base_lr = 1e-3;
  s.warmup_lr = 1e-6;
  s.min_lr = 1e-5;
  s.warmup_steps = 10;
  s.total_steps = 110;
  CHECK(s.at(0) == doctest::Approx(1e-6));
  CHECK(s.at(5) == doctest::Approx(1e-6 + 5 * (1e-3 - 1e-6) / 10));
  CHECK(s.at(10) == doctest::Approx(1e-3));                           // peak
  CHECK(s.at(60) == doctest::Approx(1e-5 + 0.5 * (1e-3 - 1e-5)));     // half-way: cos(pi/2) = 0
  CHECK(s.at(35) == doctest::Approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + std::cos(M_PI * 0.25))));
  CHECK(s.at(110) == doctest::Approx(1e-5));                          // end
  CHECK(s.at(500) == doctest::Approx(1e-5));
  // Update u runs with the value set after update u - 1.
  CHECK(s.for_update(0) == s.at(0));
  CHECK(s.for_update(1) == s.at(0));
  CHECK(s.for_update(11) == s.at(10));
  CHECK(scale_lr(5e-4, 128, 1, 1) == doctest::Approx(1.25e-4));
  CHECK(scale_lr(5e-4, 128, 4, 2) == doctest::Approx(1e-3));
}

TEST_CASE("config: defaults are the reference's") {
  Config c;
  CHECK(c.integer("DATA.BATCH_SIZE") == 128);
  CHECK(c.number("TRAIN.BASE_LR") == 5e-4);
  CHECK(c.number("TRAIN.CLIP_GRAD") == 5.0);
  CHECK(c.integer("SEED") == 20030605);
  CHECK(c.str("AUG.AUTO_AUGMENT") == "rand-m9-mstd0.5-inc1");
  CHECK(c.number("AUG.MIXUP") == 0.8);
  const auto m = c.model_config();
  CHECK(m.num_experts == 32);
  CHECK(m.aux_weight == 0.01);
  CHECK(m.layer_scale_layers == std::vector<int64_t>{7});
  c.validate();
}

TEST_CASE("config: files, --opts and errors naming the key") {
  const std::string path = "test_config_tmp.json";
  {
    std::ofstream f(path);
    f << R"({"MODEL": {"TYPE": "soft_moe_128", "NUM_CLASSES": 100}, "TRAIN": {"EPOCHS": 100, "BASE_LR": 1}})";
  }
  Config c;
  c.merge_file(path);
  CHECK(c.integer("MODEL.NUM_CLASSES") == 100);
  CHECK(c.number("TRAIN.BASE_LR") == 1.0);  // an integer is a valid number
  CHECK(c.model_config().num_experts == 128);
  c.set_from_string("DATA.IMG_SIZE", "64");
  c.set_from_string("TRAIN.OPTIMIZER.BETAS", "[0.8, 0.9]");
  c.set_from_string("TRAIN.AUTO_RESUME", "False");
  c.set_from_string("MODEL.NAME", "run 1");
  CHECK(c.integer("DATA.IMG_SIZE") == 64);
  CHECK_FALSE(c.flag("TRAIN.AUTO_RESUME"));
  CHECK(c.str("MODEL.NAME") == "run 1");
  CHECK_THROWS_WITH_AS(c.set_from_string("TRAIN.BASE_LRR", "1"), doctest::Contains("TRAIN.BASE_LRR"), Error);
  CHECK_THROWS_WITH_AS(c.set_from_string("DATA.IMG_SIZE", "big"), doctest::Contains("DATA.IMG_SIZE must be an integer"), Error);
  CHECK_THROWS_WITH_AS(c.set_from_string("DATA.IMG_SIZE", "64.5"), doctest::Contains("DATA.IMG_SIZE"), Error);
  {
    std::ofstream f(path);
    f << R"({"TRAIN": {"WARMUP": 3}})";
  }
  CHECK_THROWS_WITH_AS(c.merge_file(path), doctest::Contains("unknown config key TRAIN.WARMUP"), Error);
  {
    std::ofstream f(path);
    f << R"({"AUG": {"MIXUP": "yes"}})";
  }
  CHECK_THROWS_WITH_AS(c.merge_file(path), doctest::Contains("AUG.MIXUP must be a number"), Error);
  {
    std::ofstream f(path);
    f << R"({"AUG": )";
  }
  CHECK_THROWS_WITH_AS(c.merge_file(path), doctest::Contains("invalid JSON"), Error);
  // A number past double's range is the JSON library's out_of_range, not a
  // syntax error: still refused as invalid JSON naming the file or the key.
  {
    std::ofstream f(path);
    f << R"({"TRAIN": {"BASE_LR": 5.0e4444}})";
  }
  const std::string invalid = path + ": invalid JSON";
  CHECK_THROWS_WITH_AS(c.merge_file(path), doctest::Contains(invalid.c_str()), Error);
  CHECK_THROWS_WITH_AS(c.set_from_string("TRAIN.BASE_LR", "1e999"),
                       doctest::Contains("config key TRAIN.BASE_LR must be"), Error);
  CHECK_THROWS_WITH_AS(c.merge_file("no_such_config.json"), doctest::Contains("no_such_config.json"), Error);
  std::remove(path.c_str());
  c.set_from_string("PRECISION", "fp16");
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("PRECISION"), Error);
}

TEST_CASE("config: every shipped config parses and validates") {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(FGMOE_SOURCE_DIR) + "/train/configs")) {
    if (entry.path().extension() != ".json") continue;
    Config c;
    CHECK_NOTHROW(c.merge_file(entry.path().string()));
    CHECK_NOTHROW(c.validate());
    ++count;
  }
  CHECK(count >= 4);
}
