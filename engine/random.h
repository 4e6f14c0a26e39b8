// Seeded counter-based random numbers. A Generator hands out one offset per
// draw; the numbers of a draw are a pure function of (seed, offset, index), so
// they are the same on the CPU and the GPU and after a resume that restores
// the generator's state.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace fg {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void manual_seed(uint64_t seed) {
    seed_ = seed;
    offset_ = 0;
  }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves the offset for one draw. Inside a CUDA graph capture it also
  // registers this generator with the graph (engine/cuda_graph.h), after which
  // offset_base() says where the kernels of the draw read their replay's shift.
  uint64_t next_offset();
  // Null except for a generator drawn from in the capture under way.
  const uint64_t* offset_base() const { return offset_base_; }
  // For the graph capture only: sets or clears offset_base().
  void set_offset_base(const uint64_t* base) { offset_base_ = base; }

  // Host-side draws for code that needs a few numbers (augmentation parameters, shuffles).
  double uniform();               // [0, 1)
  double normal();                // N(0, 1)
  uint64_t random_u64();          // 64 random bits
  int64_t randint(int64_t high);  // [0, high)

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
  const uint64_t* offset_base_ = nullptr;
};

// The process-wide generator used when none is passed.
Generator& default_generator();
void manual_seed(uint64_t seed);

// U(low, high) and N(mean, std) tensors.
Tensor rand(const Shape& shape, Generator& gen, double low = 0.0, double high = 1.0,
            DType dtype = DType::Float32, Device device = kCPU);
Tensor randn(const Shape& shape, Generator& gen, double mean = 0.0, double std = 1.0,
             DType dtype = DType::Float32, Device device = kCPU);
// In-place fills (no autograd), for parameter initialization.
void uniform_(const Tensor& t, Generator& gen, double low, double high);
void normal_(const Tensor& t, Generator& gen, double mean, double std);

}  // namespace fg
