#include "data/loader.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "engine/cuda_support.h"

namespace fg::data {

namespace {

class AlignedHostAllocator : public HostAllocator {
 public:
  void* allocate(size_t nbytes) override {
    void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
    FG_CHECK(p, "out of host memory allocating a batch of ", nbytes, " bytes");
    return p;
  }
  void deallocate(void* pointer, size_t) override { std::free(pointer); }
};

// Page-locked memory the GPU reads by DMA, so batches upload without staging
// (ordinary aligned memory when there is no GPU).
class PinnedHostAllocator : public HostAllocator {
 public:
  void* allocate(size_t nbytes) override { return pinned_alloc(nbytes); }
  void deallocate(void* pointer, size_t) override { pinned_free(pointer); }
};

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

}  // namespace

std::shared_ptr<HostAllocator> default_host_allocator() {
  static auto allocator = std::make_shared<AlignedHostAllocator>();
  return allocator;
}

std::shared_ptr<HostAllocator> pinned_host_allocator() {
  static auto allocator = std::make_shared<PinnedHostAllocator>();
  return allocator;
}

// Recycles batch blocks: pinning or faulting in fresh memory for every batch
// would cost more than the batch's own work.
struct DataLoader::Pool : std::enable_shared_from_this<DataLoader::Pool> {
  std::shared_ptr<HostAllocator> allocator;
  size_t keep = 8;
  std::mutex mutex;
  std::vector<std::pair<void*, size_t>> free_blocks;

  ~Pool() {
    for (auto& [p, n] : free_blocks) allocator->deallocate(p, n);
  }
  std::shared_ptr<uint8_t> acquire(size_t nbytes) {
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (size_t i = 0; i < free_blocks.size(); ++i) {
        if (free_blocks[i].second == nbytes) {
          p = free_blocks[i].first;
          free_blocks.erase(free_blocks.begin() + static_cast<ptrdiff_t>(i));
          break;
        }
      }
    }
    if (!p) p = allocator->allocate(nbytes);
    auto self = shared_from_this();
    return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p),
                                    [self, nbytes](uint8_t* q) { self->release(q, nbytes); });
  }
  void release(void* p, size_t nbytes) {
    std::lock_guard<std::mutex> lock(mutex);
    if (free_blocks.size() < keep) {
      free_blocks.emplace_back(p, nbytes);
    } else {
      allocator->deallocate(p, nbytes);
    }
  }
};

struct DataLoader::Slot {
  int64_t batch = -1;  // the batch this slot holds, -1 when free
  int64_t rows = 0;
  int64_t remaining = 0;
  bool ready = false;
  std::shared_ptr<uint8_t> block;
  float* images = nullptr;
  float* masks = nullptr;
  bool* mask_valid = nullptr;
  int64_t* labels = nullptr;
  float* targets = nullptr;
  size_t images_offset = 0, masks_offset = 0, valid_offset = 0, labels_offset = 0,
         targets_offset = 0;
  std::vector<int64_t> indices;
  MixupParams mixup;
};

DataLoader::DataLoader(std::shared_ptr<const ImageFolderDataset> dataset,
                       const DataOptions& data_options, const LoaderOptions& options)
    : dataset_(std::move(dataset)),
      data_options_(data_options),
      options_(options),
      sampler_(dataset_ ? dataset_->size() : 0, options.world_size, options.rank, options.shuffle,
               options.sampler_seed, false),
      mixup_(data_options, dataset_ ? std::max<int64_t>(1, dataset_->num_classes()) : 1) {
  FG_CHECK(dataset_, "DataLoader: no dataset");
  FG_CHECK(options_.batch_size > 0, "config key DATA.BATCH_SIZE must be positive");
  FG_CHECK(options_.num_workers >= 0, "config key DATA.NUM_WORKERS must not be negative");
  FG_CHECK(options_.prefetch >= 1, "config key DATA.PREFETCH must be at least 1");
  if (!options_.log) options_.log = log_to_stderr;
  if (options_.train) {
    train_transform_.emplace(data_options_);
    if (options_.apply_mixup && mixup_.enabled()) {
      FG_CHECK(options_.batch_size % 2 == 0, "mixup/cutmix needs an even DATA.BATCH_SIZE, got ",
               options_.batch_size);
    }
  } else {
    eval_transform_.emplace(data_options_);
  }
  pool_ = std::make_shared<Pool>();
  pool_->allocator = options_.allocator ? options_.allocator : default_host_allocator();
  pool_->keep = static_cast<size_t>(options_.prefetch) + 4;
  FG_CHECK(steps_per_epoch() > 0, "DataLoader: ", sampler_.num_samples(),
           " samples per process make no batch of ", options_.batch_size, " (drop_last)");
}

DataLoader::~DataLoader() { stop(); }

int64_t DataLoader::steps_per_epoch() const {
  const int64_t n = sampler_.num_samples();
  return options_.drop_last ? n / options_.batch_size
                            : (n + options_.batch_size - 1) / options_.batch_size;
}

void DataLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& slot : slots_) {
    slot->batch = -1;
    slot->ready = false;
    slot->block.reset();
  }
}

void DataLoader::start_epoch(int64_t epoch, int64_t start_step) {
  stop();
  FG_CHECK(epoch >= 0, "start_epoch: negative epoch ", epoch);
  FG_CHECK(start_step >= 0 && start_step <= steps_per_epoch(), "start_epoch: step ", start_step,
           " outside [0, ", steps_per_epoch(), "]");
  std::lock_guard<std::mutex> lock(mutex_);
  epoch_ = epoch;
  shard_ = sampler_.indices(epoch);
  const int64_t rows = options_.drop_last ? steps_per_epoch() * options_.batch_size
                                          : static_cast<int64_t>(shard_.size());
  next_task_ = std::min(rows, start_step * options_.batch_size);
  end_task_ = rows;
  next_batch_ = start_step;
  end_batch_ = steps_per_epoch();
  stopping_ = false;
  summary_logged_ = false;
  failure_ = nullptr;
  stats_ = EpochStats{};
  stats_.epoch = epoch;
  epoch_bad_.clear();
  slots_.clear();
  for (int i = 0; i < options_.prefetch; ++i) slots_.push_back(std::make_unique<Slot>());
  for (int w = 0; w < options_.num_workers; ++w)
    workers_.emplace_back(&DataLoader::worker_loop, this, w);
  if (options_.num_workers == 0 && !inline_workspace_) {
    inline_workspace_ = std::make_unique<TransformWorkspace>();
  }
}

void DataLoader::prepare_slot(Slot& slot, int64_t batch) {
  const int64_t first = batch * options_.batch_size;
  const int64_t rows = std::min(options_.batch_size, end_task_ - first);
  const int64_t S = data_options_.img_size;
  const int64_t C = dataset_->num_classes();
  size_t offset = 0;
  slot.images_offset = offset;
  offset += align64(static_cast<size_t>(rows * 3 * S * S) * sizeof(float));
  slot.masks_offset = offset;
  offset += align64(static_cast<size_t>(rows * S * S) * sizeof(float));
  slot.targets_offset = offset;
  offset += align64(static_cast<size_t>(rows * C) * sizeof(float));
  slot.labels_offset = offset;
  offset += align64(static_cast<size_t>(rows) * sizeof(int64_t));
  slot.valid_offset = offset;
  offset += align64(static_cast<size_t>(rows));
  slot.block = pool_->acquire(offset);
  uint8_t* base = slot.block.get();
  slot.images = reinterpret_cast<float*>(base + slot.images_offset);
  slot.masks = reinterpret_cast<float*>(base + slot.masks_offset);
  slot.targets = reinterpret_cast<float*>(base + slot.targets_offset);
  slot.labels = reinterpret_cast<int64_t*>(base + slot.labels_offset);
  slot.mask_valid = reinterpret_cast<bool*>(base + slot.valid_offset);
  slot.batch = batch;
  slot.rows = rows;
  slot.remaining = rows;
  slot.ready = false;
  slot.indices.assign(static_cast<size_t>(rows), -1);
  slot.mixup = MixupParams{};
}

void DataLoader::report_once(int64_t index, bool mask_problem, const std::string& message) {
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(bad_mutex_);
    first = bad_samples_.emplace(index, mask_problem).second;
  }
  if (first) options_.log(message);
}

void DataLoader::count_bad(int64_t index, bool mask_problem) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (epoch_bad_.insert(index).second)
    ++(mask_problem ? stats_.unreadable_masks : stats_.corrupt_images);
}

void DataLoader::fill_row(Slot& slot, int64_t row, int64_t shard_position, TransformWorkspace& ws) {
  const int64_t S = data_options_.img_size;
  const size_t plane = static_cast<size_t>(S * S);
  SampleOutput out{slot.images + row * 3 * plane, slot.masks + row * plane};
  const int64_t position = sampler_.global_position(shard_position);
  int64_t index = shard_[static_cast<size_t>(shard_position)];
  // Training reads masks when DATA.MASKS asks; evaluation when the dataset has them.
  const bool read_masks = data_options_.masks;
  PlanarImage& mask = ws.mask_source;
  for (int attempt = 0;; ++attempt) {
    FG_CHECK(attempt <= options_.max_replacements, "DataLoader: ", options_.max_replacements,
             " replacement samples in a row could not be read; is the dataset at ",
             dataset_->root(), " intact?");
    if (attempt > 0) {
      // The replacement depends only on (seed, epoch, position, attempt).
      Generator pick(
          mix_seed({options_.seed, static_cast<uint64_t>(epoch_), static_cast<uint64_t>(position),
                    static_cast<uint64_t>(attempt), 0x5245504cull}));
      index = pick.randint(dataset_->size());
    }
    int known_bad = -1;  // -1: not known bad, 0: image problem, 1: mask problem
    {
      std::lock_guard<std::mutex> lock(bad_mutex_);
      auto it = bad_samples_.find(index);
      if (it != bad_samples_.end()) known_bad = it->second ? 1 : 0;
    }
    const Sample& sample = dataset_->samples()[static_cast<size_t>(index)];
    if (known_bad >= 0) {
      // Counted in every epoch that meets it, reported only the first time.
      count_bad(index, known_bad == 1);
      continue;
    }
    Generator rng(mix_seed({options_.seed, static_cast<uint64_t>(epoch_),
                            static_cast<uint64_t>(position), static_cast<uint64_t>(attempt)}));
    try {
      const bool has_mask = read_masks && !sample.mask_path.empty();
      if (has_mask) load_mask(sample.mask_path, mask, ws.mask_bytes, ws.mask_gray);
      try {
        read_file(sample.image_path, ws.image_bytes);
      } catch (const Error& e) {
        throw DecodeError(e.what());
      }
      if (options_.train) {
        (*train_transform_)(ws.image_bytes.data(), ws.image_bytes.size(),
                            has_mask ? &mask : nullptr, rng, out, ws);
      } else {
        (*eval_transform_)(ws.image_bytes.data(), ws.image_bytes.size(), has_mask ? &mask : nullptr,
                           out, ws);
      }
      slot.labels[row] = sample.label;
      slot.mask_valid[row] = has_mask;
      slot.indices[static_cast<size_t>(row)] = index;
      if (options_.train && read_masks && !has_mask) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++stats_.missing_masks;
      }
      return;
    } catch (const MaskError& e) {
      report_once(index, true, str_cat("skipping ", sample.image_path, ": ", e.what()));
      count_bad(index, true);
    } catch (const DecodeError& e) {
      report_once(index, false,
                  str_cat("skipping corrupt image ", sample.image_path, ": ", e.what()));
      count_bad(index, false);
    }
  }
}

void DataLoader::finish_batch(Slot& slot) {
  const int64_t C = dataset_->num_classes();
  const int S = data_options_.img_size;
  if (options_.train && options_.apply_mixup && mixup_.enabled()) {
    Generator rng(
        mix_seed({options_.seed, static_cast<uint64_t>(epoch_), static_cast<uint64_t>(slot.batch),
                  static_cast<uint64_t>(options_.rank), 0x4d49585550ull}));
    slot.mixup = mixup_.draw(slot.rows, S, S, rng);
    mixup_.apply(slot.mixup, slot.images, slot.masks, slot.mask_valid, slot.labels, slot.targets,
                 slot.rows, S, S);
  } else {
    smoothed_targets(slot.labels, slot.rows, C,
                     options_.train ? data_options_.label_smoothing : 0.0, slot.targets);
  }
}

Batch DataLoader::take_batch(Slot& slot) {
  const int64_t B = slot.rows;
  const int64_t S = data_options_.img_size;
  const int64_t C = dataset_->num_classes();
  std::shared_ptr<uint8_t> block = slot.block;
  auto view = [&](size_t offset, const Shape& shape, DType dtype) {
    return Tensor::from_blob(block.get() + offset, shape, dtype, kCPU, [block](void*) {});
  };
  Batch b;
  b.images = view(slot.images_offset, {B, 3, S, S}, DType::Float32);
  b.masks = view(slot.masks_offset, {B, 1, S, S}, DType::Float32);
  b.mask_valid = view(slot.valid_offset, {B}, DType::Bool);
  b.labels = view(slot.labels_offset, {B}, DType::Int64);
  b.targets = view(slot.targets_offset, {B, C}, DType::Float32);
  b.epoch = epoch_;
  b.step = slot.batch;
  b.indices = std::move(slot.indices);
  b.mixup = std::move(slot.mixup);
  slot.block.reset();
  slot.batch = -1;
  slot.ready = false;
  return b;
}

void DataLoader::worker_loop(int) {
  TransformWorkspace ws;
  while (true) {
    Slot* slot = nullptr;
    int64_t row = 0, task = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // The next row, once its batch has a free slot (at most `prefetch` in flight).
      work_cv_.wait(lock, [&] {
        if (stopping_ || failure_ || next_task_ >= end_task_) return true;
        const int64_t batch = next_task_ / options_.batch_size;
        Slot& s = *slots_[static_cast<size_t>(batch % options_.prefetch)];
        return s.batch == batch || s.batch == -1;
      });
      if (stopping_ || failure_ || next_task_ >= end_task_) return;
      task = next_task_++;
      const int64_t batch = task / options_.batch_size;
      slot = slots_[static_cast<size_t>(batch % options_.prefetch)].get();
      if (slot->batch != batch) {
        try {
          prepare_slot(*slot, batch);
        } catch (...) {
          failure_ = std::current_exception();
          ready_cv_.notify_all();
          return;
        }
      }
      row = task - batch * options_.batch_size;
    }
    // A fresh slot may let the next batch's rows start.
    work_cv_.notify_all();
    try {
      fill_row(*slot, row, task, ws);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!failure_) failure_ = std::current_exception();
      ready_cv_.notify_all();
      work_cv_.notify_all();
      return;
    }
    bool last = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last = --slot->remaining == 0;
    }
    if (last) {
      try {
        finish_batch(*slot);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!failure_) failure_ = std::current_exception();
        ready_cv_.notify_all();
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        slot->ready = true;
      }
      ready_cv_.notify_all();
    }
  }
}

std::optional<Batch> DataLoader::next() {
  FG_CHECK(epoch_ >= 0, "DataLoader::next: call start_epoch first");
  if (options_.num_workers == 0) {
    int64_t batch;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      batch = next_batch_;
    }
    if (batch < end_batch_) {
      Slot& slot = *slots_[0];
      prepare_slot(slot, batch);
      for (int64_t row = 0; row < slot.rows; ++row) {
        fill_row(slot, row, batch * options_.batch_size + row, *inline_workspace_);
      }
      finish_batch(slot);
      std::lock_guard<std::mutex> lock(mutex_);
      ++next_batch_;
      next_task_ = next_batch_ * options_.batch_size;
      Batch b = take_batch(slot);
      stats_.samples += b.size();
      return b;
    }
  } else {
    std::unique_lock<std::mutex> lock(mutex_);
    if (next_batch_ < end_batch_) {
      Slot& slot = *slots_[static_cast<size_t>(next_batch_ % options_.prefetch)];
      ready_cv_.wait(
          lock, [&] { return failure_ || stopping_ || (slot.batch == next_batch_ && slot.ready); });
      if (failure_) {
        std::exception_ptr failure = failure_;
        lock.unlock();
        stop();
        std::rethrow_exception(failure);
      }
      FG_CHECK(!stopping_, "DataLoader::next: the loader was stopped");
      Batch b = take_batch(slot);
      ++next_batch_;
      stats_.samples += b.size();
      lock.unlock();
      work_cv_.notify_all();
      return b;
    }
  }
  // End of the epoch.
  bool log_now = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    log_now = !summary_logged_;
    summary_logged_ = true;
  }
  const std::string report = epoch_report();
  if (log_now && !report.empty()) options_.log(report);
  return std::nullopt;
}

std::string DataLoader::epoch_report() const {
  const EpochStats s = stats();
  if (!s.corrupt_images && !s.unreadable_masks && !s.missing_masks) return "";
  return str_cat("epoch ", s.epoch, " (rank ", options_.rank, "): ", s.samples,
                 " samples; skipped ", s.corrupt_images, " corrupt images and ", s.unreadable_masks,
                 " images with unreadable masks (replaced by other samples); ", s.missing_masks,
                 " samples without a mask (no foreground term)");
}

EpochStats DataLoader::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace fg::data
