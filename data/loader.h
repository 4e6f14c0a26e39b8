// The data loader: worker threads decode and transform samples straight into
// the rows of a bounded number of batches in flight, in a fixed order.
//
// Order and randomness are pure functions of (seed, epoch, rank, world size):
// the shard comes from DistributedSampler; a sample's augmentation draws from
// a generator seeded by (seed, epoch, its position in the epoch order); a
// batch's mixup from (seed, epoch, step, rank). Thread timing changes nothing,
// so stopping mid-epoch and starting again at step k gives the batches an
// uninterrupted run gives.
//
// A sample whose image cannot be decoded, or whose mask file cannot be read, is
// reported once (with its path) and replaced by another sample drawn from the
// same seeded stream, so the epoch keeps its length. An image without a mask
// file trains without the foreground term (mask_valid false). Both are counted
// in the epoch's summary.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/mixup.h"
#include "data/options.h"
#include "data/sampler.h"
#include "data/transforms.h"
#include "engine/tensor.h"

namespace fg::data {

// The one place batch memory comes from. The default hands out 64-byte
// aligned host memory; a CUDA build can plug in pinned memory here.
class HostAllocator {
 public:
  virtual ~HostAllocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* pointer, size_t nbytes) = 0;
};
std::shared_ptr<HostAllocator> default_host_allocator();
// Page-locked host memory when a GPU is present (batches then upload without
// staging), the default's aligned memory otherwise.
std::shared_ptr<HostAllocator> pinned_host_allocator();

// One batch. All tensors live on the host in a single allocation from the
// loader's HostAllocator, recycled once every tensor of the batch is gone.
struct Batch {
  Tensor images;      // float32 (B, 3, S, S), normalized
  Tensor masks;       // float32 (B, 1, S, S), 0 or 1 (all 0 where mask_valid is false)
  Tensor mask_valid;  // bool (B): the sample has a mask (the foreground term applies)
  Tensor labels;      // int64 (B)
  Tensor targets;     // float32 (B, C): soft targets (mixup/cutmix, label smoothing);
                      // evaluation batches hold one-hot targets
  int64_t epoch = 0;
  int64_t step = 0;              // batch index within the epoch
  std::vector<int64_t> indices;  // dataset index of each row
  MixupParams mixup;             // what mixing did (empty lambda: none)
  int64_t size() const { return static_cast<int64_t>(indices.size()); }
};

struct LoaderOptions {
  int64_t batch_size = 128;  // DATA.BATCH_SIZE (per process)
  int num_workers = 8;       // DATA.NUM_WORKERS; 0 runs everything in next()
  int prefetch = 4;          // DATA.PREFETCH: batches in flight
  bool train = true;         // training transforms + mixup, or evaluation transforms
  bool shuffle = true;       // DistributedSampler shuffle (TEST.SHUFFLE for validation)
  bool drop_last = true;     // drop the last incomplete batch (training)
  int rank = 0;
  int world_size = 1;
  uint64_t seed = 20030605;   // SEED: augmentation and mixup randomness
  uint64_t sampler_seed = 0;  // DistributedSampler's seed (PyTorch's default 0)
  bool apply_mixup = true;    // mix in the loader (training); off leaves targets smoothed only
  LogFunction log = log_to_stderr;
  std::shared_ptr<HostAllocator> allocator;  // null: default_host_allocator()
  int max_replacements = 1000;               // per sample, before the loader gives up
};

struct EpochStats {
  int64_t epoch = 0;
  int64_t samples = 0;           // rows delivered
  int64_t corrupt_images = 0;    // distinct samples skipped: image could not be decoded
  int64_t unreadable_masks = 0;  // distinct samples skipped: mask file could not be read
  int64_t missing_masks = 0;     // rows without a mask (mask_valid false) in training
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const ImageFolderDataset> dataset, const DataOptions& data_options,
             const LoaderOptions& options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Batches per epoch on this process.
  int64_t steps_per_epoch() const;
  // Samples in the dataset (all processes together).
  int64_t dataset_size() const { return dataset_->size(); }
  const DistributedSampler& sampler() const { return sampler_; }
  const ImageFolderDataset& dataset() const { return *dataset_; }

  // Begins epoch `epoch` at batch `start_step` (resuming), stopping any epoch in progress.
  void start_epoch(int64_t epoch, int64_t start_step = 0);
  // The next batch in order, or nothing at the end of the epoch (the summary is
  // then logged if anything was skipped or missing). Rethrows a worker's failure.
  std::optional<Batch> next();
  // Abandons the current epoch; workers stop after their current sample.
  void stop();
  // Counts of the current (or last) epoch so far.
  EpochStats stats() const;
  // The epoch's summary line when something was replaced or missing, else empty.
  std::string epoch_report() const;

 private:
  struct Slot;
  struct Pool;
  void worker_loop(int worker);
  void fill_row(Slot& slot, int64_t row, int64_t shard_position, TransformWorkspace& ws);
  void finish_batch(Slot& slot);
  void prepare_slot(Slot& slot, int64_t batch);
  Batch take_batch(Slot& slot);
  void report_once(int64_t index, bool mask_problem, const std::string& message);
  void count_bad(int64_t index, bool mask_problem);

  std::shared_ptr<const ImageFolderDataset> dataset_;
  DataOptions data_options_;
  LoaderOptions options_;
  DistributedSampler sampler_;
  std::optional<TrainTransform> train_transform_;
  std::optional<EvalTransform> eval_transform_;
  Mixup mixup_;
  std::shared_ptr<Pool> pool_;

  // Epoch state (guarded by mutex_).
  mutable std::mutex mutex_;
  std::condition_variable work_cv_, ready_cv_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<int64_t> shard_;
  int64_t epoch_ = -1;
  int64_t next_task_ = 0;   // next row (epoch-relative) to hand to a worker
  int64_t end_task_ = 0;    // one past the last row of the epoch
  int64_t next_batch_ = 0;  // next batch next() returns
  int64_t end_batch_ = 0;
  bool stopping_ = false;
  bool summary_logged_ = false;
  std::exception_ptr failure_;
  EpochStats stats_;
  std::set<int64_t> epoch_bad_;  // bad samples met this epoch
  std::vector<std::thread> workers_;
  std::unique_ptr<TransformWorkspace> inline_workspace_;

  // Samples found bad (reported once, skipped thereafter): index -> mask problem?
  std::mutex bad_mutex_;
  std::map<int64_t, bool> bad_samples_;
};

}  // namespace fg::data
