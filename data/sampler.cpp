#include "data/sampler.h"

#include <numeric>

#include "engine/error.h"
#include "engine/random.h"

namespace fg::data {

uint64_t mix_seed(std::initializer_list<uint64_t> values) {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (uint64_t v : values) {
    state ^= v + 0x9E3779B97F4A7C15ull + (state << 6) + (state >> 2);
    // splitmix64 finalizer
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    state = z ^ (z >> 31);
  }
  return state;
}

DistributedSampler::DistributedSampler(int64_t dataset_size, int world_size, int rank, bool shuffle,
                                       uint64_t seed, bool drop_last)
    : dataset_size_(dataset_size),
      world_size_(world_size),
      rank_(rank),
      shuffle_(shuffle),
      seed_(seed),
      drop_last_(drop_last) {
  FG_CHECK(world_size >= 1, "sampler: world size must be at least 1, got ", world_size);
  FG_CHECK(rank >= 0 && rank < world_size, "sampler: rank ", rank, " outside [0, ", world_size,
           ")");
  FG_CHECK(dataset_size > 0, "sampler: empty dataset");
  if (drop_last_ && dataset_size_ % world_size_ != 0) {
    num_samples_ = dataset_size_ / world_size_;
  } else {
    num_samples_ = (dataset_size_ + world_size_ - 1) / world_size_;
  }
  total_size_ = num_samples_ * world_size_;
  FG_CHECK(num_samples_ > 0, "sampler: ", dataset_size_, " samples cannot give each of ",
           world_size_, " processes one (drop_last)");
}

std::vector<int64_t> DistributedSampler::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(dataset_size_));
  std::iota(order.begin(), order.end(), 0);
  if (shuffle_) {
    // Fisher-Yates from the generator seeded by seed + epoch (as torch seeds its
    // generator with seed + epoch).
    Generator g(seed_ + static_cast<uint64_t>(epoch));
    for (int64_t i = dataset_size_ - 1; i > 0; --i) {
      const int64_t j = g.randint(i + 1);
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
  }
  if (!drop_last_) {
    // Pad by repeating the order from its start, as often as needed.
    const int64_t padding = total_size_ - dataset_size_;
    for (int64_t k = 0; k < padding; ++k)
      order.push_back(order[static_cast<size_t>(k % dataset_size_)]);
  } else {
    order.resize(static_cast<size_t>(total_size_));
  }
  return order;
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch) const {
  const std::vector<int64_t> order = epoch_order(epoch);
  std::vector<int64_t> shard;
  shard.reserve(static_cast<size_t>(num_samples_));
  for (int64_t k = 0; k < num_samples_; ++k)
    shard.push_back(order[static_cast<size_t>(global_position(k))]);
  return shard;
}

}  // namespace fg::data
