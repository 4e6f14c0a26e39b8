#include "engine/random.h"

#include <cmath>

#include "engine/backend.h"
#include "engine/cuda_graph.h"
#include "engine/philox.h"

namespace fg {

double Generator::uniform() {
  return static_cast<double>(random_u64() >> 11) * (1.0 / 9007199254740992.0);
}

double Generator::normal() {
  const double u1 = 1.0 - uniform();  // (0, 1]
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

uint64_t Generator::next_offset() {
  if (cuda_graph_capturing()) offset_base_ = cuda_graph_offset_base(*this);
  return offset_++;
}

uint64_t Generator::random_u64() {
  FG_CHECK(!cuda_graph_capturing(), "a random number drawn on the host inside a CUDA graph capture "
           "would be the same at every replay; draw it before the captured step");
  const Philox4 r = philox4x32(0, offset_++, seed_);
  return (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
}

int64_t Generator::randint(int64_t high) {
  FG_CHECK(high > 0, "randint: high must be positive, got ", high);
  // Rejection sampling keeps the draw unbiased.
  const uint64_t range = static_cast<uint64_t>(high);
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t x;
  do {
    x = random_u64();
  } while (x >= limit);
  return static_cast<int64_t>(x % range);
}

Generator& default_generator() {
  static Generator generator(20030605);
  return generator;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

void uniform_(const Tensor& t, Generator& gen, double low, double high) {
  FG_CHECK(t.is_contiguous(), "uniform_: needs a contiguous tensor");
  FG_CHECK(!cuda_graph_capturing(), "uniform_: random fills are not supported inside a CUDA graph capture");
  if (t.numel()) backend_of(t).uniform(t, gen.seed(), gen.next_offset(), low, high);
}

void normal_(const Tensor& t, Generator& gen, double mean, double std) {
  FG_CHECK(t.is_contiguous(), "normal_: needs a contiguous tensor");
  FG_CHECK(!cuda_graph_capturing(), "normal_: random fills are not supported inside a CUDA graph capture");
  if (t.numel()) backend_of(t).normal(t, gen.seed(), gen.next_offset(), mean, std);
}

Tensor rand(const Shape& shape, Generator& gen, double low, double high, DType dtype,
            Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  uniform_(t, gen, low, high);
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, double mean, double std, DType dtype,
             Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  normal_(t, gen, mean, std);
  return t;
}

}  // namespace fg
