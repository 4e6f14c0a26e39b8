// fgmoe-data-bench: the training data pipeline (read, decode, joint crop /
// flip / RandAugment / normalize / RandomErasing) on ImageNet-sized JPEGs it
// writes itself, fgmoe against PIL + torchvision (bench/data_bench_peer.py) on
// the same files in the same run: one thread, then all cores.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "engine/serialize/pth.h"
#include "data/sampler.h"
#include "data/transforms.h"
#include "synth_scene.h"

namespace fs = std::filesystem;
using namespace fg;
using namespace fg::data;

namespace {

const char* kUsage = R"(usage: fgmoe-data-bench [options]

  --images N        JPEGs to generate and process (default 256)
  --size WxH        their size (default 500x375, about ImageNet's)
  --quality Q       JPEG quality (default 90)
  --repeat R        timed passes; the median is reported (default 3)
  --threads N       the "all cores" thread count (default: all cores)
  --dir DIR         keep the generated files in DIR (default: a temporary folder)
  --no-peer         fgmoe only
  --masks-only      only the image + mask configuration
)";

struct Arguments {
  int images = 256;
  int width = 500, height = 375;
  int quality = 90;
  int repeat = 3;
  int threads = 0;
  std::string dir;
  bool peer = true;
  bool masks_only = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void generate(const std::string& root, const Arguments& a) {
  const int classes = 8;
  std::vector<uint8_t> mask;
  InterleavedImage rgb;
  for (int i = 0; i < a.images; ++i) {
    const int label = i % classes;
    const std::string name = str_cat("class_", label);
    fs::create_directories(fs::path(root) / "train" / name);
    fs::create_directories(fs::path(root) / "train_mask" / name);
    synth::SceneSpec spec;
    spec.width = a.width;
    spec.height = a.height;
    spec.label = label;
    spec.seed = mix_seed({12345, static_cast<uint64_t>(i)});
    // Grain and fractal texture bring the files to about 100 KB, ImageNet's
    // typical size at this resolution: the entropy decoder's work is realistic.
    spec.noise = 0.14;
    spec.detail = 0.8;
    synth::render_scene(spec, rgb, mask);
    const auto jpeg = synth::encode_jpeg(rgb, a.quality);
    const std::string stem = str_cat(root, "/train/", name, "/img_", i);
    std::ofstream(stem + ".JPEG", std::ios::binary)
        .write(reinterpret_cast<const char*>(jpeg.data()),
               static_cast<std::streamsize>(jpeg.size()));
    serialize::save_tensor_pth(str_cat(root, "/train_mask/", name, "/img_", i, ".pth"),
                    Tensor::from_host(mask.data(), {a.height, a.width}, DType::UInt8));
  }
}

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

// One thread running the sample pipeline over every file, as the peer's loop
// does. Timed in process CPU time: on a shared machine that is what one core
// delivers, whatever else runs.
double fgmoe_single(const ImageFolderDataset& ds, bool masks, int repeat) {
  DataOptions options;
  const TrainTransform transform(options);
  TransformWorkspace ws;
  const int S = options.img_size;
  std::vector<float> image(3 * S * S), mask(S * S);
  PlanarImage mask_plane;
  std::vector<double> seconds;
  for (int pass = 0; pass <= repeat; ++pass) {  // pass 0 warms the page cache
    const double start = cpu_seconds();
    for (int64_t k = 0; k < ds.size(); ++k) {
      const Sample& s = ds.samples()[k];
      Generator rng(mix_seed({static_cast<uint64_t>(pass), static_cast<uint64_t>(k)}));
      read_file(s.image_path, ws.image_bytes);
      if (masks) load_mask(s.mask_path, mask_plane, ws.mask_bytes, ws.mask_gray);
      transform(ws.image_bytes.data(), ws.image_bytes.size(), masks ? &mask_plane : nullptr, rng,
                SampleOutput{image.data(), masks ? mask.data() : nullptr}, ws);
    }
    if (pass > 0) seconds.push_back(cpu_seconds() - start);
  }
  return ds.size() / median(seconds);
}

// The loader with all its threads, batches of 32, no mixing (the peer's DataLoader does none).
double fgmoe_loader(std::shared_ptr<ImageFolderDataset> ds, bool masks, int threads, int repeat) {
  DataOptions options;
  options.masks = masks;
  LoaderOptions lo;
  lo.batch_size = 32;
  lo.num_workers = threads;
  lo.prefetch = 2 * threads;
  lo.apply_mixup = false;
  DataLoader loader(ds, options, lo);
  std::vector<double> seconds;
  int64_t rows = 0;
  for (int pass = 0; pass <= repeat; ++pass) {
    const auto start = std::chrono::steady_clock::now();
    loader.start_epoch(pass);
    rows = 0;
    while (auto b = loader.next()) rows += b->size();
    if (pass > 0)
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return rows / median(seconds);
}

double peer(const std::string& root, bool masks, int threads, int repeat) {
  const std::string script = std::string(FGMOE_BENCH_DIR) + "/data_bench_peer.py";
  const std::string out = root + "/peer.json";
  const std::string command =
      str_cat(FGMOE_PYTHON, " ", script, " --dir ", root, " --threads ", threads, " --repeat ",
              repeat, masks ? " --masks" : "", " > ", out);
  if (std::system(command.c_str()) != 0) {
    std::cerr << "fgmoe-data-bench: the PyTorch peer failed: " << command << "\n";
    return 0;
  }
  std::ifstream f(out);
  std::string line;
  std::getline(f, line);
  const size_t p = line.find(':');
  return p == std::string::npos ? 0 : std::atof(line.c_str() + p + 1);
}

}  // namespace

int main(int argc, char** argv) {
  Arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "fgmoe-data-bench: " << flag << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (flag == "--images") {
      a.images = std::max(2, std::atoi(value().c_str()));
    } else if (flag == "--size") {
      const std::string v = value();
      a.width = std::atoi(v.c_str());
      const size_t x = v.find('x');
      a.height = x == std::string::npos ? a.width : std::atoi(v.c_str() + x + 1);
    } else if (flag == "--quality") {
      a.quality = std::atoi(value().c_str());
    } else if (flag == "--repeat") {
      a.repeat = std::max(1, std::atoi(value().c_str()));
    } else if (flag == "--threads") {
      a.threads = std::atoi(value().c_str());
    } else if (flag == "--dir") {
      a.dir = value();
    } else if (flag == "--no-peer") {
      a.peer = false;
    } else if (flag == "--masks-only") {
      a.masks_only = true;
    } else {
      std::cerr << "fgmoe-data-bench: unknown argument '" << flag << "'\n" << kUsage;
      return 2;
    }
  }
  if (a.threads <= 0)
    a.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  try {
    std::string root = a.dir;
    bool temporary = false;
    if (root.empty()) {
      root = (fs::temp_directory_path() / str_cat("fgmoe-data-bench-", ::getpid())).string();
      temporary = true;
    }
    if (!fs::exists(fs::path(root) / "train")) generate(root, a);
    auto ds = std::make_shared<ImageFolderDataset>(
        ImageFolderDataset::scan(root, "train", "train_mask", nullptr, [](const std::string&) {}));
    uintmax_t bytes = 0;
    for (const Sample& s : ds->samples()) bytes += fs::file_size(s.image_path);
    std::printf(
        "%lld JPEGs %dx%d q%d (%.0f KB on average), %d timed passes (median), %d cores\n"
        "(1 thread: process CPU time per image; all threads: wall time)\n",
        static_cast<long long>(ds->size()), a.width, a.height, a.quality,
        bytes / 1024.0 / ds->size(), a.repeat, a.threads);
    std::printf("%-14s %-8s %14s %14s %8s\n", "pipeline", "threads", "fgmoe img/s", "PIL+tv img/s",
                "ratio");
    for (bool masks : {false, true}) {
      if (a.masks_only && !masks) continue;
      for (int threads : {1, a.threads}) {
        const double ours = threads == 1 ? fgmoe_single(*ds, masks, a.repeat)
                                         : fgmoe_loader(ds, masks, threads, a.repeat);
        const double theirs = a.peer ? peer(root, masks, threads, a.repeat) : 0;
        std::printf("%-14s %-8d %14.1f %14.1f %7.2fx\n", masks ? "image+mask" : "image", threads,
                    ours, theirs, theirs > 0 ? ours / theirs : 0.0);
        std::fflush(stdout);
      }
    }
    if (temporary) fs::remove_all(root);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fgmoe-data-bench: " << e.what() << "\n";
    return 1;
  }
}
