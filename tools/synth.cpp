// fgmoe-synth: writes a synthetic dataset in the reference's layout
// (train/, train_mask/, val/, optionally val_mask/), deterministic from --seed.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/serialize/pth.h"
#include "data/sampler.h"
#include "engine/error.h"
#include "engine/random.h"
#include "synth_scene.h"

namespace fs = std::filesystem;
using namespace fg;

namespace {

const char* kUsage = R"(usage: fgmoe-synth --out DIR [options]

Writes a synthetic image classification dataset with foreground masks in the
reference's layout:
  DIR/train/<class>/<class>_<n>.JPEG     DIR/train_mask/<class>/<class>_<n>.pth
  DIR/val/<class>/<class>_<n>.JPEG       (DIR/val_mask/... with --val-masks)
Each class is one object (shape, texture and colour) at a random place and
size over a cluttered background; a mask marks the object's pixels. The same
arguments give the same files.

options:
  --out DIR                 output folder (must not hold a dataset yet, see --force)
  --classes N               number of classes (default 10)
  --train-per-class N       training images per class (default 100)
  --val-per-class N         validation images per class (default 20)
  --size W[xH]              image size in pixels (default 128; e.g. 500x375)
  --seed S                  seed (default 0)
  --spurious-background P   fraction of training images whose background colours
                            and clutter are tied to the class; validation images
                            never are (default 0)
  --quality Q               JPEG quality 1..100 (default 90)
  --mask-dtype T            uint8, bool or float32 (default uint8)
  --mask-shape S            hw for (H, W) or 1hw for (1, H, W) (default hw)
  --val-masks               also write masks for the validation images
  --threads N               worker threads (default: all cores; output is the same)
  --force                   write into a folder that already holds a dataset
  --quiet                   no progress output
  --help                    this text
)";

struct Arguments {
  std::string out;
  int64_t classes = 10;
  int64_t train_per_class = 100;
  int64_t val_per_class = 20;
  int width = 128, height = 128;
  uint64_t seed = 0;
  double spurious = 0.0;
  int quality = 90;
  std::string mask_dtype = "uint8";
  std::string mask_shape = "hw";
  bool val_masks = false;
  int threads = 0;
  bool force = false;
  bool quiet = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::cerr << "fgmoe-synth: " << message << "\n(run fgmoe-synth --help for the options)\n";
  std::exit(2);
}

int64_t parse_integer(const std::string& flag, const std::string& text, int64_t low, int64_t high) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0)
    usage_error(flag + ": '" + text + "' is not an integer");
  if (v < low || v > high) {
    usage_error(flag + ": " + text + " is outside [" + std::to_string(low) + ", " +
                std::to_string(high) + "]");
  }
  return v;
}

double parse_fraction(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0') usage_error(flag + ": '" + text + "' is not a number");
  if (!(v >= 0.0 && v <= 1.0)) usage_error(flag + ": " + text + " is outside [0, 1]");
  return v;
}

Arguments parse(int argc, char** argv) {
  Arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(flag + " needs a value");
      return argv[++i];
    };
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (flag == "--out") {
      a.out = value();
    } else if (flag == "--classes") {
      a.classes = parse_integer(flag, value(), 1, 100000);
    } else if (flag == "--train-per-class") {
      a.train_per_class = parse_integer(flag, value(), 1, 10000000);
    } else if (flag == "--val-per-class") {
      a.val_per_class = parse_integer(flag, value(), 0, 10000000);
    } else if (flag == "--size") {
      const std::string v = value();
      const size_t x = v.find('x');
      a.width = static_cast<int>(parse_integer(flag, v.substr(0, x), 16, 8192));
      a.height = x == std::string::npos
                     ? a.width
                     : static_cast<int>(parse_integer(flag, v.substr(x + 1), 16, 8192));
    } else if (flag == "--seed") {
      a.seed = static_cast<uint64_t>(parse_integer(flag, value(), 0, INT64_MAX));
    } else if (flag == "--spurious-background") {
      a.spurious = parse_fraction(flag, value());
    } else if (flag == "--quality") {
      a.quality = static_cast<int>(parse_integer(flag, value(), 1, 100));
    } else if (flag == "--mask-dtype") {
      a.mask_dtype = value();
      if (a.mask_dtype != "uint8" && a.mask_dtype != "bool" && a.mask_dtype != "float32") {
        usage_error("--mask-dtype must be uint8, bool or float32, not '" + a.mask_dtype + "'");
      }
    } else if (flag == "--mask-shape") {
      a.mask_shape = value();
      if (a.mask_shape != "hw" && a.mask_shape != "1hw") {
        usage_error("--mask-shape must be hw or 1hw, not '" + a.mask_shape + "'");
      }
    } else if (flag == "--val-masks") {
      a.val_masks = true;
    } else if (flag == "--threads") {
      a.threads = static_cast<int>(parse_integer(flag, value(), 1, 1024));
    } else if (flag == "--force") {
      a.force = true;
    } else if (flag == "--quiet") {
      a.quiet = true;
    } else {
      usage_error("unknown argument '" + flag + "'");
    }
  }
  if (a.out.empty()) usage_error("--out DIR is required");
  return a;
}

std::string class_name(int64_t label, int64_t classes) {
  const int digits = std::max<int>(3, static_cast<int>(std::to_string(classes - 1).size()));
  std::string n = std::to_string(label);
  return "class_" +
         std::string(static_cast<size_t>(std::max<int>(0, digits - static_cast<int>(n.size()))),
                     '0') +
         n;
}

struct Job {
  bool train;
  int64_t label;
  int64_t index;
};

Tensor mask_tensor(const std::vector<uint8_t>& mask, const Arguments& a) {
  Shape shape = a.mask_shape == "1hw" ? Shape{1, a.height, a.width} : Shape{a.height, a.width};
  if (a.mask_dtype == "float32") {
    std::vector<float> values(mask.begin(), mask.end());
    return Tensor::from_vector(values, shape);
  }
  Tensor t = Tensor::from_host(mask.data(), shape, DType::UInt8);
  if (a.mask_dtype == "bool") t = Tensor::from_host(mask.data(), shape, DType::Bool);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const Arguments a = parse(argc, argv);
  try {
    const fs::path root(a.out);
    if (fs::exists(root / "train") && !a.force) {
      usage_error(a.out + " already holds a dataset (train/); use --force to write into it");
    }
    std::vector<Job> jobs;
    for (int64_t c = 0; c < a.classes; ++c) {
      for (int64_t i = 0; i < a.train_per_class; ++i) jobs.push_back({true, c, i});
      for (int64_t i = 0; i < a.val_per_class; ++i) jobs.push_back({false, c, i});
    }
    for (int64_t c = 0; c < a.classes; ++c) {
      const std::string name = class_name(c, a.classes);
      fs::create_directories(root / "train" / name);
      fs::create_directories(root / "train_mask" / name);
      if (a.val_per_class > 0) fs::create_directories(root / "val" / name);
      if (a.val_masks && a.val_per_class > 0) fs::create_directories(root / "val_mask" / name);
    }
    const int threads = a.threads > 0
                            ? a.threads
                            : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    std::atomic<size_t> next{0}, done{0};
    std::mutex failure_mutex;
    std::string failure;
    auto work = [&]() {
      data::InterleavedImage rgb;
      std::vector<uint8_t> mask;
      while (true) {
        const size_t k = next++;
        if (k >= jobs.size()) return;
        {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure.empty()) return;
        }
        const Job& job = jobs[k];
        try {
          synth::SceneSpec spec;
          spec.width = a.width;
          spec.height = a.height;
          spec.label = job.label;
          spec.seed = data::mix_seed({a.seed, job.train ? 1u : 2u, static_cast<uint64_t>(job.label),
                                      static_cast<uint64_t>(job.index)});
          if (job.train && a.spurious > 0) {
            Generator coin(data::mix_seed({spec.seed, 0x5350555249ull}));
            spec.spurious_background = coin.uniform() < a.spurious;
          }
          synth::render_scene(spec, rgb, mask);
          const std::string name = class_name(job.label, a.classes);
          const std::string stem = name + "_" + std::to_string(job.index);
          const fs::path image_path =
              root / (job.train ? "train" : "val") / name / (stem + ".JPEG");
          const std::vector<uint8_t> jpeg = synth::encode_jpeg(rgb, a.quality);
          std::ofstream f(image_path, std::ios::binary | std::ios::trunc);
          f.write(reinterpret_cast<const char*>(jpeg.data()),
                  static_cast<std::streamsize>(jpeg.size()));
          FG_CHECK(f.good(), "cannot write ", image_path.string());
          if (job.train || a.val_masks) {
            const fs::path mask_path =
                root / (job.train ? "train_mask" : "val_mask") / name / (stem + ".pth");
            serialize::save_tensor_pth(mask_path.string(), mask_tensor(mask, a));
          }
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (failure.empty()) failure = e.what();
          return;
        }
        ++done;
      }
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) pool.emplace_back(work);
    const auto start = std::chrono::steady_clock::now();
    // Progress on standard error, about twice a second.
    while (!a.quiet) {
      const size_t d = done.load();
      std::fprintf(stderr, "\rfgmoe-synth: %zu / %zu images", d, jobs.size());
      std::fflush(stderr);
      bool finished;
      {
        std::lock_guard<std::mutex> lock(failure_mutex);
        finished = d >= jobs.size() || !failure.empty() || next.load() >= jobs.size() + threads;
      }
      if (finished || d >= jobs.size()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    for (std::thread& t : pool) t.join();
    if (!failure.empty()) {
      std::cerr << (a.quiet ? "" : "\n") << "fgmoe-synth: " << failure << "\n";
      return 1;
    }
    if (!a.quiet) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "\rfgmoe-synth: %zu images in %.1f s, written to %s\n", jobs.size(),
                   seconds, a.out.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fgmoe-synth: " << e.what() << "\n";
    return 1;
  }
}
