// The dataset layout, odd files, sharding across processes, resuming, the
// batch layout, and datasets written by fgmoe-synth.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "data/loader.h"
#include "engine/serialize/pth.h"
#include "helpers.h"

using namespace fg;
using namespace fg::data;
using namespace fg::data::testing;
using nlohmann::json;

namespace {

// Collects log lines (the loader's reports) for inspection.
struct LogCapture {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::shared_ptr<std::mutex> mutex = std::make_shared<std::mutex>();
  LogFunction function() const {
    auto l = lines;
    auto m = mutex;
    return [l, m](const std::string& s) {
      std::lock_guard<std::mutex> lock(*m);
      l->push_back(s);
    };
  }
  int count(const std::string& needle) const {
    std::lock_guard<std::mutex> lock(*mutex);
    int n = 0;
    for (const auto& s : *lines) n += s.find(needle) != std::string::npos;
    return n;
  }
};

Tensor mask_of(int width, int height) {
  std::vector<uint8_t> m(static_cast<size_t>(width) * height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x)
      m[y * width + x] = (x > width / 4 && x < 3 * width / 4 && y > height / 4) ? 1 : 0;
  }
  return Tensor::from_vector(m, {height, width});
}

// root/{train,train_mask,val}/<class>/... with `per_class` JPEGs per class.
void make_dataset(const std::string& root, int classes, int per_class, int val_per_class,
                  int width = 96, int height = 72) {
  for (int c = 0; c < classes; ++c) {
    // (str_cat rather than chains of +, which trip GCC 12's -Wrestrict.)
    const std::string name = str_cat("c", c);
    make_dirs(str_cat(root, "/train/", name));
    make_dirs(str_cat(root, "/train_mask/", name));
    make_dirs(str_cat(root, "/val/", name));
    for (int i = 0; i < per_class; ++i) {
      const std::string stem = str_cat(name, "_", i);
      write_bytes(str_cat(root, "/train/", name, "/", stem, ".JPEG"),
                  encode_jpeg(random_image(width, height, 3, c * 1000 + i)));
      serialize::save_tensor_pth(str_cat(root, "/train_mask/", name, "/", stem, ".pth"),
                      mask_of(width, height));
    }
    for (int i = 0; i < val_per_class; ++i) {
      write_bytes(str_cat(root, "/val/", name, "/v", i, ".JPEG"),
                  encode_jpeg(random_image(width, height, 3, 50000 + c * 1000 + i)));
    }
  }
}

DataOptions small_options(int size = 32) {
  DataOptions o;
  o.img_size = size;
  return o;
}

LoaderOptions loader_options(int64_t batch, int workers, const LogCapture* log = nullptr) {
  LoaderOptions l;
  l.batch_size = batch;
  l.num_workers = workers;
  l.prefetch = 2;
  if (log) l.log = log->function();
  return l;
}

std::vector<Batch> whole_epoch(DataLoader& loader, int64_t epoch, int64_t start = 0) {
  loader.start_epoch(epoch, start);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.indices == b.indices && a.step == b.step &&
         a.images.to_vector<float>() == b.images.to_vector<float>() &&
         a.masks.to_vector<float>() == b.masks.to_vector<float>() &&
         a.targets.to_vector<float>() == b.targets.to_vector<float>() &&
         a.labels.to_vector<int64_t>() == b.labels.to_vector<int64_t>() &&
         a.mask_valid.to(DType::UInt8).to_vector<uint8_t>() ==
             b.mask_valid.to(DType::UInt8).to_vector<uint8_t>();
}

}  // namespace

TEST_CASE("dataset: layout, sorted classes, extensions in any case, masks by stem") {
  TempDir dir("layout");
  const std::string root = dir.path();
  make_dirs(root + "/train/b_dog");
  make_dirs(root + "/train/a_cat");
  make_dirs(root + "/train/c_empty");
  make_dirs(root + "/train_mask/a_cat");
  make_dirs(root + "/train_mask/b_dog");
  const auto jpeg = encode_jpeg(random_image(40, 30, 3, 1));
  write_bytes(root + "/train/a_cat/x2.JPEG", jpeg);
  write_bytes(root + "/train/a_cat/x1.jpg", jpeg);
  write_bytes(root + "/train/a_cat/x3.Png", encode_png(random_image(40, 30, 3, 2)));
  write_bytes(root + "/train/a_cat/notes.txt", std::vector<uint8_t>{'h', 'i'});
  write_bytes(root + "/train/b_dog/y1.jpeg", jpeg);
  serialize::save_tensor_pth(root + "/train_mask/a_cat/x1.pth", mask_of(40, 30));
  InterleavedImage png_mask;
  png_mask.reset(40, 30, 1);
  write_bytes(root + "/train_mask/a_cat/x3.png", encode_png(png_mask));
  LogCapture log;
  const auto ds = ImageFolderDataset::scan(root, "train", "train_mask", nullptr, log.function());
  CHECK(ds.classes() == std::vector<std::string>{"a_cat", "b_dog", "c_empty"});
  REQUIRE(ds.size() == 4);
  CHECK(ds.samples()[0].image_path == root + "/train/a_cat/x1.jpg");
  CHECK(ds.samples()[1].image_path == root + "/train/a_cat/x2.JPEG");
  CHECK(ds.samples()[2].image_path == root + "/train/a_cat/x3.Png");
  CHECK(ds.samples()[3].label == 1);
  CHECK(ds.samples()[0].mask_path == root + "/train_mask/a_cat/x1.pth");
  CHECK(ds.samples()[1].mask_path.empty());
  CHECK(ds.samples()[2].mask_path == root + "/train_mask/a_cat/x3.png");
  CHECK(ds.samples()[3].mask_path.empty());
  CHECK(ds.images_without_mask() == 2);
  CHECK(log.count("c_empty holds no images") == 1);
  // The reference's choice: leave images without masks out.
  auto only_masked = ds;
  CHECK(only_masked.drop_images_without_mask(log.function()) == 2);
  CHECK(only_masked.size() == 2);
  CHECK(only_masked.samples()[1].image_path == root + "/train/a_cat/x3.Png");
  CHECK(only_masked.classes().size() == 3);
  CHECK(log.count("no mask for") == 2);
  CHECK(log.count("2 of 4 images") == 1);

  // Missing folders: the split is an error naming it, the mask split a warning.
  CHECK_THROWS_WITH_AS(ImageFolderDataset::scan(root, "val", "", nullptr, log.function()),
                       doctest::Contains((root + "/val").c_str()), Error);
  CHECK_THROWS_WITH_AS(
      ImageFolderDataset::scan(root + "/nowhere", "train", "", nullptr, log.function()),
      doctest::Contains("nowhere"), Error);
  const auto no_masks =
      ImageFolderDataset::scan(root, "train", "no_such_masks", nullptr, log.function());
  CHECK(no_masks.images_without_mask() == 4);
  CHECK(log.count("no_such_masks does not exist") == 1);
  // Validation labels follow the training classes; a class training lacks is an error.
  make_dirs(root + "/val/b_dog");
  write_bytes(root + "/val/b_dog/v.JPEG", jpeg);
  const auto val = ImageFolderDataset::scan(root, "val", "", &ds.classes(), log.function());
  CHECK(val.samples()[0].label == 1);
  CHECK(val.num_classes() == 3);
  make_dirs(root + "/val/zebra");
  CHECK_THROWS_WITH_AS(ImageFolderDataset::scan(root, "val", "", &ds.classes(), log.function()),
                       doctest::Contains("zebra"), Error);
  // A split with class folders but no images at all.
  make_dirs(root + "/empty/a");
  CHECK_THROWS_WITH_AS(ImageFolderDataset::scan(root, "empty", "", nullptr, log.function()),
                       doctest::Contains("no images"), Error);
}

TEST_CASE("loader: odd files train, broken ones are reported once and replaced") {
  TempDir dir("odd");
  const std::string root = dir.path();
  make_dataset(root, 2, 6, 0);
  const std::string c0 = root + "/train/c0/", m0 = root + "/train_mask/c0/";
  const InterleavedImage img = random_image(96, 72, 3, 99);
  // Grayscale, progressive, a PNG named .JPEG and a CMYK JPEG written by PIL.
  write_bytes(c0 + "c0_0.JPEG", encode_jpeg(img, {90, false, true, 420}));
  write_bytes(c0 + "c0_1.JPEG", encode_jpeg(img, {90, true, false, 420}));
  write_bytes(c0 + "c0_2.JPEG", encode_png(img));
  write_bytes(dir / "img.raw", img.pixels);
  run_pil_oracle(json::array({{{"op", "encode"},
                               {"input", dir / "img.raw"},
                               {"width", 96},
                               {"height", 72},
                               {"mode", "RGB"},
                               {"convert", "CMYK"},
                               {"path", c0 + "c0_3.JPEG"},
                               {"options", {{"quality", 90}}}}}),
                 dir.path());
  // A truncated JPEG, a missing mask, an unreadable mask.
  const auto good = read_bytes(root + "/train/c1/c1_0.JPEG");
  write_bytes(root + "/train/c1/c1_0.JPEG",
              std::vector<uint8_t>(good.begin(),
                                   good.begin() + static_cast<ptrdiff_t>(good.size() * 2 / 3)));
  std::remove((root + "/train_mask/c1/c1_1.pth").c_str());
  write_bytes(root + "/train_mask/c1/c1_2.pth", std::vector<uint8_t>{'P', 'K', 3, 4, 0, 0});

  LogCapture log;
  auto ds = std::make_shared<ImageFolderDataset>(
      ImageFolderDataset::scan(root, "train", "train_mask", nullptr, log.function()));
  REQUIRE(ds->size() == 12);
  LoaderOptions lo = loader_options(4, 2, &log);
  lo.shuffle = false;
  DataLoader loader(ds, small_options(), lo);
  REQUIRE(loader.steps_per_epoch() == 3);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto batches = whole_epoch(loader, epoch);
    CHECK(batches.size() == 3);  // the epoch keeps its length
    std::set<int64_t> used;
    int64_t invalid = 0;
    for (const Batch& b : batches) {
      CHECK(b.size() == 4);
      for (int64_t i = 0; i < b.size(); ++i) {
        used.insert(b.indices[i]);
        const bool valid = b.mask_valid.to(DType::UInt8).to_vector<uint8_t>()[i];
        const std::string& path = ds->samples()[b.indices[i]].image_path;
        // Only the image whose mask file is gone lacks a mask.
        CHECK(valid == (path.find("c1_1.") == std::string::npos));
        if (!valid) {
          ++invalid;
          const auto masks = b.masks.to_vector<float>();
          const int64_t plane = 32 * 32;
          CHECK(std::all_of(masks.begin() + i * plane, masks.begin() + (i + 1) * plane,
                            [](float v) { return v == 0.0f; }));
        }
      }
    }
    // The broken samples never appear; the odd but valid ones do.
    for (const std::string bad : {"c1_0.", "c1_2."}) {
      for (int64_t i : used) CHECK(ds->samples()[i].image_path.find(bad) == std::string::npos);
    }
    for (int k = 0; k < 4; ++k) {
      const int64_t index = k;  // c0_0 .. c0_3 are the first samples
      CHECK(used.count(index) == 1);
    }
    const EpochStats s = loader.stats();
    CHECK(s.samples == 12);
    CHECK(s.corrupt_images == 1);
    CHECK(s.unreadable_masks == 1);
    CHECK(s.missing_masks == invalid);
    CHECK(invalid >= 1);
  }
  // Reported once each (with the path), summarized each epoch.
  CHECK(log.count("c1_0.JPEG") == 1);
  CHECK(log.count("c1_2.pth") == 1);
  CHECK(log.count("truncated") == 1);
  CHECK(log.count("epoch 0 (rank 0)") == 1);
  CHECK(log.count("epoch 1 (rank 0)") == 1);
}

TEST_CASE("sampler: shards are equal, disjoint apart from padding, and cover the dataset") {
  for (int64_t size : {1, 7, 10, 12, 101}) {
    for (int world : {1, 2, 3, 4, 8}) {
      for (bool shuffle : {true, false}) {
        CAPTURE(size);
        CAPTURE(world);
        std::map<int64_t, int> seen;
        int64_t length = -1;
        for (int rank = 0; rank < world; ++rank) {
          DistributedSampler s(size, world, rank, shuffle, 0);
          const auto shard = s.indices(3);
          if (length < 0) length = static_cast<int64_t>(shard.size());
          CHECK(static_cast<int64_t>(shard.size()) == length);
          for (int64_t i : shard) ++seen[i];
        }
        CHECK(static_cast<int64_t>(seen.size()) == size);  // covers everything
        const int64_t padding = length * world - size;
        CHECK(padding >= 0);
        CHECK(padding < world);
        int64_t repeats = 0;
        for (auto& [i, n] : seen) repeats += n - 1;
        CHECK(repeats == padding);  // duplicates only from padding
      }
    }
  }
  // The order depends on the epoch, the same epoch gives the same order.
  DistributedSampler s(1000, 2, 1, true, 0);
  CHECK(s.indices(0) != s.indices(1));
  CHECK(s.indices(5) == s.indices(5));
  CHECK(DistributedSampler(1000, 2, 1, true, 1).indices(0) != s.indices(0));
  DistributedSampler ordered(10, 3, 1, false, 0);
  CHECK(ordered.indices(0) == std::vector<int64_t>{1, 4, 7, 0});  // padded with the start
}

TEST_CASE(
    "loader: resuming mid-epoch gives the uninterrupted run's batches, whatever the threads") {
  TempDir dir("resume");
  make_dataset(dir.path(), 3, 9, 0);
  auto ds = std::make_shared<ImageFolderDataset>(ImageFolderDataset::scan(
      dir.path(), "train", "train_mask", nullptr, [](const std::string&) {}));
  DataOptions o = small_options();
  LoaderOptions lo = loader_options(4, 3);
  lo.world_size = 2;
  lo.rank = 1;
  DataLoader threaded(ds, o, lo);
  const auto full = whole_epoch(threaded, 4);
  REQUIRE(full.size() == 3);  // 27 samples -> 14 per rank -> 3 batches of 4
  // Stop after one batch, resume at step 1.
  threaded.start_epoch(4);
  auto first = threaded.next();
  REQUIRE(first);
  CHECK(same_batch(*first, full[0]));
  threaded.stop();
  const auto resumed = whole_epoch(threaded, 4, 1);
  REQUIRE(resumed.size() == 2);
  CHECK(same_batch(resumed[0], full[1]));
  CHECK(same_batch(resumed[1], full[2]));
  // Inline (no threads) and another worker count: the same batches.
  LoaderOptions inline_options = lo;
  inline_options.num_workers = 0;
  DataLoader inline_loader(ds, o, inline_options);
  const auto inline_batches = whole_epoch(inline_loader, 4);
  LoaderOptions five = lo;
  five.num_workers = 5;
  five.prefetch = 3;
  DataLoader five_loader(ds, o, five);
  const auto five_batches = whole_epoch(five_loader, 4);
  for (size_t k = 0; k < full.size(); ++k) {
    CAPTURE(k);
    CHECK(same_batch(inline_batches[k], full[k]));
    CHECK(same_batch(five_batches[k], full[k]));
  }
  // Another epoch is different.
  const auto other = whole_epoch(threaded, 5);
  CHECK_FALSE(same_batch(other[0], full[0]));
}

TEST_CASE("loader: batch layout, soft targets and validation batches") {
  TempDir dir("layout-batch");
  make_dataset(dir.path(), 4, 4, 3);
  auto train = std::make_shared<ImageFolderDataset>(ImageFolderDataset::scan(
      dir.path(), "train", "train_mask", nullptr, [](const std::string&) {}));
  DataOptions o = small_options(48);
  DataLoader loader(train, o, loader_options(8, 2));
  loader.start_epoch(0);
  auto b = loader.next();
  REQUIRE(b);
  CHECK(b->images.shape() == Shape{8, 3, 48, 48});
  CHECK(b->images.dtype() == DType::Float32);
  CHECK(b->masks.shape() == Shape{8, 1, 48, 48});
  CHECK(b->masks.dtype() == DType::Float32);
  CHECK(b->mask_valid.shape() == Shape{8});
  CHECK(b->mask_valid.dtype() == DType::Bool);
  CHECK(b->labels.dtype() == DType::Int64);
  CHECK(b->targets.shape() == Shape{8, 4});
  const auto labels = b->labels.to_vector<int64_t>();
  for (int64_t i = 0; i < 8; ++i) CHECK(labels[i] == train->samples()[b->indices[i]].label);
  const auto targets = b->targets.to_vector<float>();
  const auto masks = b->masks.to_vector<float>();
  for (int64_t i = 0; i < 8; ++i) {
    double sum = 0;
    for (int c = 0; c < 4; ++c) sum += targets[i * 4 + c];
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-5));
  }
  CHECK(std::all_of(masks.begin(), masks.end(), [](float v) { return v == 0.0f || v == 1.0f; }));
  CHECK(std::count(masks.begin(), masks.end(), 1.0f) > 0);
  // Mixing happened (one lambda for the batch).
  REQUIRE(b->mixup.lambda.size() == 8);
  // Validation: every sample once, in order, the last batch short, one-hot targets.
  auto val = std::make_shared<ImageFolderDataset>(ImageFolderDataset::scan(
      dir.path(), "val", "", &train->classes(), [](const std::string&) {}));
  LoaderOptions vo = loader_options(5, 2);
  vo.train = false;
  vo.shuffle = false;
  vo.drop_last = false;
  DataLoader val_loader(val, o, vo);
  const auto batches = whole_epoch(val_loader, 0);
  REQUIRE(batches.size() == 3);
  CHECK(batches[2].size() == 2);
  std::vector<int64_t> order;
  for (const Batch& vb : batches) order.insert(order.end(), vb.indices.begin(), vb.indices.end());
  std::vector<int64_t> expected(12);
  for (int64_t i = 0; i < 12; ++i) expected[i] = i;
  CHECK(order == expected);
  const auto one_hot = batches[0].targets.to_vector<float>();
  CHECK(one_hot[0] == 1.0f);
  CHECK(one_hot[1] == 0.0f);
  // Batch memory is recycled once a batch is gone: take many, keep none.
  for (int epoch = 1; epoch < 4; ++epoch) whole_epoch(val_loader, epoch);
}

TEST_CASE(
    "loader: batch memory comes from the HostAllocator; a dataset gone bad stops with an error") {
  TempDir dir("allocator");
  make_dataset(dir.path(), 2, 6, 0);
  auto ds = std::make_shared<ImageFolderDataset>(ImageFolderDataset::scan(
      dir.path(), "train", "train_mask", nullptr, [](const std::string&) {}));
  struct Counting : HostAllocator {
    std::atomic<int64_t> allocated{0}, live{0};
    void* allocate(size_t n) override {
      ++allocated;
      ++live;
      return default_host_allocator()->allocate(n);
    }
    void deallocate(void* p, size_t n) override {
      --live;
      default_host_allocator()->deallocate(p, n);
    }
  };
  auto counting = std::make_shared<Counting>();
  {
    LoaderOptions lo = loader_options(4, 2);
    lo.allocator = counting;
    DataLoader loader(ds, small_options(), lo);
    std::vector<Batch> kept;
    for (int epoch = 0; epoch < 3; ++epoch) {
      for (auto& b : whole_epoch(loader, epoch)) kept.push_back(std::move(b));
    }
    CHECK(counting->allocated > 0);
    // Each batch holds one block; blocks are recycled, not allocated per batch, once released.
    CHECK(counting->live == counting->allocated);
    const int64_t before = counting->allocated;
    kept.clear();
    whole_epoch(loader, 3);
    CHECK(counting->allocated == before);
  }
  CHECK(counting->live == 0);  // everything returned when the loader is gone

  // Files deleted after the scan: every draw fails, the loader gives up with a message.
  std::filesystem::remove_all(dir.path() + "/train");
  LogCapture log;
  LoaderOptions lo = loader_options(4, 2, &log);
  lo.max_replacements = 20;
  DataLoader loader(ds, small_options(), lo);
  loader.start_epoch(0);
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("intact"), Error);
}

#ifdef FGMOE_SYNTH
TEST_CASE("fgmoe-synth: writes a dataset the loader reads, deterministically") {
  TempDir dir("synth");
  const std::string synth = FGMOE_SYNTH;
  const std::string out1 = dir / "a", out2 = dir / "b", out3 = dir / "c";
  auto run = [&](const std::string& args) {
    const std::string command = synth + " " + args + " > " + dir.path() + "/out.txt 2>&1";
    const int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  const std::string common =
      " --classes 3 --train-per-class 4 --val-per-class 2 --size 64x48 --spurious-background 0.5";
  REQUIRE(run("--out " + out1 + common + " --seed 5 --threads 1") == 0);
  REQUIRE(run("--out " + out2 + common + " --seed 5 --threads 3 --quiet") == 0);
  REQUIRE(run("--out " + out3 + common +
              " --seed 6 --quiet --mask-dtype float32 --mask-shape 1hw") == 0);
  const std::string sample = "/train/class_001/class_001_2.JPEG";
  CHECK(read_bytes(out1 + sample) == read_bytes(out2 + sample));
  CHECK(read_bytes(out1 + sample) != read_bytes(out3 + sample));
  CHECK(read_bytes(out1 + "/train_mask/class_002/class_002_3.pth") ==
        read_bytes(out2 + "/train_mask/class_002/class_002_3.pth"));
  const Tensor m = serialize::load_tensor_pth(out3 + "/train_mask/class_000/class_000_0.pth");
  CHECK(m.dtype() == DType::Float32);
  CHECK(m.shape() == Shape{1, 48, 64});

  auto ds = std::make_shared<ImageFolderDataset>(
      ImageFolderDataset::scan(out1, "train", "train_mask", nullptr, [](const std::string&) {}));
  CHECK(ds->classes() == std::vector<std::string>{"class_000", "class_001", "class_002"});
  CHECK(ds->size() == 12);
  CHECK(ds->images_without_mask() == 0);
  LogCapture log;
  DataLoader loader(ds, small_options(), loader_options(4, 2, &log));
  const auto batches = whole_epoch(loader, 0);
  CHECK(batches.size() == 3);
  for (const Batch& b : batches) {
    const auto valid = b.mask_valid.to(DType::UInt8).to_vector<uint8_t>();
    CHECK(std::all_of(valid.begin(), valid.end(), [](uint8_t v) { return v == 1; }));
  }
  CHECK(loader.stats().corrupt_images == 0);
  CHECK(log.lines->empty());
  auto val = ImageFolderDataset::scan(out1, "val", "", &ds->classes(), [](const std::string&) {});
  CHECK(val.size() == 6);

  // Bad arguments: a clear message and a non-zero exit.
  CHECK(run("--classes 3") == 2);
  CHECK(run("--out " + out1 + common) == 2);  // already holds a dataset
  CHECK(run("--out " + dir.path() + "/d --classes zero") == 2);
  CHECK(run("--out " + dir.path() + "/d --spurious-background 1.5") == 2);
  CHECK(run("--out " + dir.path() + "/d --frobnicate") == 2);
  CHECK(run("--help") == 0);
}
#endif
