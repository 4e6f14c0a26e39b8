// Which samples each process reads, with the semantics of PyTorch's
// DistributedSampler: every epoch one permutation of the dataset (seeded by
// seed + epoch), padded by repeating its start until it divides evenly, and
// process `rank` takes every world_size-th index from position rank on.
// The permutation comes from fgmoe's generator, so the order differs from
// torch.randperm's while following the same rules.
#pragma once

#include <cstdint>
#include <vector>

namespace fg::data {

class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, int world_size = 1, int rank = 0, bool shuffle = true,
                     uint64_t seed = 0, bool drop_last = false);

  // Indices per process (the shard length) and in the padded epoch order.
  int64_t num_samples() const { return num_samples_; }
  int64_t total_size() const { return total_size_; }

  // The whole epoch order, padded (or cut, with drop_last) to total_size().
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // This process's dataset indices for the epoch.
  std::vector<int64_t> indices(int64_t epoch) const;
  // The position in epoch_order() of this process's k-th index.
  int64_t global_position(int64_t k) const { return rank_ + k * world_size_; }

 private:
  int64_t dataset_size_;
  int world_size_;
  int rank_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  int64_t num_samples_ = 0;
  int64_t total_size_ = 0;
};

// A 64-bit seed mixed from several values (splitmix64 chain), for per-sample
// and per-batch random streams that depend only on what they are named after.
uint64_t mix_seed(std::initializer_list<uint64_t> values);

}  // namespace fg::data
