// fgmoe-prepare: writes a copy of a dataset in the reference's layout with
// every image's shorter side brought down to at most N pixels (and its mask
// alike), so that the loader decodes fewer pixels per image.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "data/dataset.h"
#include "data/decode.h"
#include "data/imaging.h"
#include "engine/error.h"
#include "engine/serialize/byte_io.h"
#include "engine/serialize/pth.h"
#include "synth_scene.h"
#include "train/logger.h"

namespace fs = std::filesystem;
using namespace fg;

namespace {

const char* kUsage = R"(usage: fgmoe-prepare --data-path SRC --out DST [options]

Copies a dataset in the reference's layout (train/, val/, train_mask/,
val_mask/) to DST with every image's shorter side brought down to at most N
pixels: resized as PIL's Image.resize with bicubic filtering, re-encoded as
JPEG. Masks are resized to their image's new size with nearest-neighbour
sampling (as the loader scales a mask to its image) and saved as uint8 (H, W)
.pth files. Images already that small, and images that are not JPEGs, are
copied byte for byte, and so are files that cannot be read (the loader then
reports them as it would have). Class folders, file names and therefore labels
stay the same.

Decoding is most of the loader's cost and grows with the pixels decoded: a
500x375 JPEG brought to 341x256 loads about 1.5x faster (with its mask). The
price is that training sees the smaller images (RandomResizedCrop then
upsamples more), which can cost accuracy: on fgmoe-synth's images, a shorter
side of 1.14x IMG_SIZE (256 at 224) lost about 5 points of top-1 and 1.5x
IMG_SIZE lost none. Validation is hardly affected at N = 256 (it resizes the
shorter side to 256 anyway at IMG_SIZE 224).

Running the same command again completes an interrupted run: files already in
DST are kept (every file is written under a temporary name and renamed once
complete).

options:
  --data-path SRC     the dataset to copy
  --out DST           where the copy goes (not inside SRC)
  --shorter-side N    the largest shorter side kept (default 256)
  --quality Q         JPEG quality of the resized images, 1..100 (default 90)
  --workers N         threads (default: all cores)
  --quiet             no progress output
  --help              this text
)";

struct Arguments {
  std::string src, out;
  int shorter_side = 256;
  int quality = 90;
  int workers = 0;
  bool quiet = false;
};

Arguments parse(int argc, char** argv) {
  Arguments a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (flag == "--data-path") {
      a.src = tools::option_value(argc, argv, i);
    } else if (flag == "--out") {
      a.out = tools::option_value(argc, argv, i);
    } else if (flag == "--shorter-side") {
      a.shorter_side = static_cast<int>(tools::option_integer(flag, tools::option_value(argc, argv, i), 8));
      FG_CHECK(a.shorter_side <= 16384, "--shorter-side must be at most 16384, got ", a.shorter_side);
    } else if (flag == "--quality") {
      a.quality = static_cast<int>(tools::option_integer(flag, tools::option_value(argc, argv, i), 1));
      FG_CHECK(a.quality <= 100, "--quality must be in 1..100, got ", a.quality);
    } else if (flag == "--workers") {
      a.workers = static_cast<int>(tools::option_integer(flag, tools::option_value(argc, argv, i), 1));
    } else if (flag == "--quiet") {
      a.quiet = true;
    } else {
      FG_CHECK(false, "unknown argument '", flag, "' (see --help)");
    }
  }
  FG_CHECK(!a.src.empty(), "--data-path SRC is required (see --help)");
  FG_CHECK(!a.out.empty(), "--out DST is required (see --help)");
  return a;
}

void write_file(const std::string& path, const void* data, size_t size) {
  serialize::AtomicFileWriter out(path);
  out.write(data, size);
  out.commit();
}

struct Job {
  std::string image_src, image_dst;
  std::string mask_src, mask_dst;  // empty: no mask
};

struct Counts {
  std::atomic<int64_t> resized{0}, copied_small{0}, copied_other_format{0}, copied_unreadable{0},
      masks_resized{0}, masks_copied_unreadable{0}, kept{0};
};

// The work for one image (and its mask); counts what was done.
class Preparer {
 public:
  Preparer(const Arguments& a, Counts& counts) : a_(a), counts_(counts) {}

  void operator()(const Job& job) {
    const bool image_done = fs::exists(job.image_dst);
    const bool mask_done = job.mask_src.empty() || fs::exists(job.mask_dst);
    if (image_done && mask_done) {
      ++counts_.kept;
      return;
    }
    data::read_file(job.image_src, bytes_);
    // What happens to the image: resized, or copied as it is (and why).
    int new_width = 0, new_height = 0;
    std::atomic<int64_t>* outcome = &counts_.copied_unreadable;
    try {
      const data::ImageInfo info = data::probe_image(bytes_.data(), bytes_.size());
      if (info.format != data::ImageFormat::Jpeg) {
        outcome = &counts_.copied_other_format;
      } else if (std::min(info.width, info.height) <= a_.shorter_side) {
        outcome = &counts_.copied_small;
      } else {
        std::tie(new_width, new_height) = data::resize_shorter_side(info.width, info.height, a_.shorter_side);
        resize_image(new_width, new_height);
        outcome = &counts_.resized;
      }
    } catch (const data::DecodeError&) {  // corrupt or truncated: the loader will say so
    }
    const bool resized = outcome == &counts_.resized;
    if (!image_done) {
      if (resized) {
        const std::vector<uint8_t> jpeg = synth::encode_jpeg(rgb_, a_.quality);
        write_file(job.image_dst, jpeg.data(), jpeg.size());
      } else {
        write_file(job.image_dst, bytes_.data(), bytes_.size());
      }
      ++*outcome;
    }
    if (!mask_done) prepare_mask(job, resized, new_width, new_height);
  }

 private:
  // Decodes bytes_ and resizes it into rgb_ (interleaved, for the encoder).
  void resize_image(int new_width, int new_height) {
    data::decode_image(bytes_.data(), bytes_.size(), data::DecodeRequest{}, decoded_);
    const data::InterleavedImage& src = decoded_.rgb;
    const data::PixelRect whole{0, 0, src.width, src.height};
    const data::FloatBox box{0, 0, static_cast<float>(src.width), static_cast<float>(src.height)};
    data::resize_crop(src.pixels.data(), src.row_bytes(), 3, 0, 0, src.width, src.height, whole, box,
                      new_width, new_height, data::PixelRect{0, 0, new_width, new_height},
                      data::Interpolation::Bicubic, planar_, scratch_);
    rgb_.reset(new_width, new_height, 3);
    const size_t plane = planar_.plane_size();
    for (size_t i = 0; i < plane; ++i)
      for (int c = 0; c < 3; ++c) rgb_.pixels[i * 3 + static_cast<size_t>(c)] = planar_.pixels[c * plane + i];
  }

  // A resized image's mask is brought to the same size; otherwise it is copied.
  void prepare_mask(const Job& job, bool resized, int new_width, int new_height) {
    if (resized) {
      try {
        data::load_mask(job.mask_src, mask_, mask_bytes_, gray_);
        const data::PixelRect whole{0, 0, mask_.width, mask_.height};
        const data::FloatBox box{0, 0, static_cast<float>(mask_.width), static_cast<float>(mask_.height)};
        data::resize_crop_planar(mask_, whole, box, new_width, new_height,
                                 data::PixelRect{0, 0, new_width, new_height}, data::Interpolation::Nearest,
                                 mask_out_, scratch_);
        const Tensor t = Tensor::from_host(mask_out_.pixels.data(), {new_height, new_width}, DType::UInt8);
        serialize::save_tensor_pth(job.mask_dst, t);
        ++counts_.masks_resized;
        return;
      } catch (const data::MaskError&) {
        ++counts_.masks_copied_unreadable;  // copied below; the loader reports it
      }
    }
    data::read_file(job.mask_src, mask_bytes_);
    write_file(job.mask_dst, mask_bytes_.data(), mask_bytes_.size());
  }

  const Arguments& a_;
  Counts& counts_;
  std::vector<uint8_t> bytes_, mask_bytes_;
  data::DecodedImage decoded_;
  data::InterleavedImage rgb_, gray_;
  data::PlanarImage planar_, mask_, mask_out_;
  data::ImagingScratch scratch_;
};

// Jobs for one split (and its mask split, when SRC has it); creates every class
// folder in DST, empty ones included, so labels stay the same.
void add_split(const Arguments& a, const std::string& split, const std::vector<std::string>* classes,
               std::vector<Job>& jobs, std::vector<std::string>& train_classes) {
  const fs::path src(a.src), out(a.out);
  const std::string mask_split = split + "_mask";
  const bool masks = fs::is_directory(src / mask_split);
  const data::ImageFolderDataset d =
      data::ImageFolderDataset::scan(a.src, split, masks ? mask_split : "", classes);
  if (!classes) train_classes = d.classes();
  for (const std::string& c : d.classes()) {
    if (fs::is_directory(src / split / c)) fs::create_directories(out / split / c);
    if (masks && fs::is_directory(src / mask_split / c)) fs::create_directories(out / mask_split / c);
  }
  for (const data::Sample& s : d.samples()) {
    Job job;
    job.image_src = s.image_path;
    job.image_dst = (out / fs::relative(s.image_path, src)).string();
    if (!s.mask_path.empty()) {
      job.mask_src = s.mask_path;
      job.mask_dst = (out / fs::relative(s.mask_path, src)).string();
    }
    jobs.push_back(std::move(job));
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Arguments a = parse(argc, argv);
    FG_CHECK(fs::is_directory(a.src), "dataset folder not found: ", a.src);
    FG_CHECK(fs::is_directory(fs::path(a.src) / "train"), "no train/ folder in ", a.src);
    const fs::path src = fs::weakly_canonical(a.src), out = fs::weakly_canonical(a.out);
    const std::string rel = fs::relative(out, src).string();
    FG_CHECK(out != src && (rel.empty() || rel.rfind("..", 0) == 0), "--out ", a.out,
             " must not be the dataset folder or inside it");

    std::vector<Job> jobs;
    std::vector<std::string> classes;
    add_split(a, "train", nullptr, jobs, classes);
    const size_t train_jobs = jobs.size();
    if (fs::is_directory(src / "val")) add_split(a, "val", &classes, jobs, classes);

    // What was asked, next to the copy (the loader reads only the split folders).
    {
      const nlohmann::json record = {{"source", src.string()}, {"shorter_side", a.shorter_side},
                                     {"quality", a.quality}, {"resize", "bicubic (PIL), masks nearest"}};
      const std::string text = record.dump(2) + "\n";
      fs::create_directories(out);
      write_file((out / "fgmoe_prepare.json").string(), text.data(), text.size());
    }

    const int workers = a.workers > 0 ? a.workers : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    Counts counts;
    std::atomic<size_t> next{0}, done{0};
    std::mutex failure_mutex;
    std::string failure;
    auto work = [&]() {
      Preparer prepare(a, counts);
      for (size_t k = next++; k < jobs.size(); k = next++) {
        try {
          prepare(jobs[k]);
        } catch (const std::exception& e) {  // cannot write, or the source vanished: stop
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (failure.empty()) failure = jobs[k].image_src + ": " + e.what();
          next = jobs.size();
          return;
        }
        ++done;
      }
    };
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < workers; ++t) pool.emplace_back(work);
    while (!a.quiet) {
      const size_t d = done.load();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double rate = seconds > 0 ? static_cast<double>(d) / seconds : 0.0;
      std::fprintf(stderr, "\rfgmoe-prepare: %zu / %zu images (%.1f%%), %.0f images/s, eta %s   ", d, jobs.size(),
                   jobs.empty() ? 100.0 : 100.0 * static_cast<double>(d) / static_cast<double>(jobs.size()), rate,
                   rate > 0 ? train::format_duration(static_cast<double>(jobs.size() - d) / rate).c_str() : "-");
      std::fflush(stderr);
      if (d >= jobs.size() || next.load() >= jobs.size()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    for (std::thread& t : pool) t.join();
    if (!failure.empty()) {
      std::cerr << (a.quiet ? "" : "\n") << "fgmoe-prepare: " << failure
                << "\nfgmoe-prepare: stopped; running the same command again continues where it stopped\n";
      return 1;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr,
                 "%sfgmoe-prepare: %zu images (%zu train, %zu val) in %s into %s: %lld resized to a shorter side "
                 "of %d, %lld already that small, %lld not JPEG, %lld unreadable (copied as they are), %lld "
                 "already there from an earlier run; masks: %lld resized, %lld unreadable (copied)\n",
                 a.quiet ? "" : "\n", jobs.size(), train_jobs, jobs.size() - train_jobs, train::format_duration(seconds).c_str(),
                 a.out.c_str(), static_cast<long long>(counts.resized.load()), a.shorter_side,
                 static_cast<long long>(counts.copied_small.load()),
                 static_cast<long long>(counts.copied_other_format.load()),
                 static_cast<long long>(counts.copied_unreadable.load()), static_cast<long long>(counts.kept.load()),
                 static_cast<long long>(counts.masks_resized.load()),
                 static_cast<long long>(counts.masks_copied_unreadable.load()));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fgmoe-prepare: " << e.what() << "\n";
    return 1;
  }
}
