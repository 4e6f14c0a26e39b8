// The dropout kernels (engine/cuda/dropout_kernels.cuh) compiled for the host
// and run through the CUDA emulation, against the CPU backend's dropout
// bitwise: the same Philox keep decisions and the same once-rounded products,
// for float32, float64 and bfloat16 (the CPU's float32 result rounded once),
// with and without the ReLU, forward and both backwards, sizes that leave a
// partial block of four, pointers aligned (vector accesses) and not, and
// grids smaller than the work (the grid-stride loop).
#include "cuda_emu.h"
// The emulation must come first.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compare.h"
#include "engine/backend.h"
#include "engine/cuda/dropout_kernels.cuh"
#include "engine/tensor.h"

using namespace fg;
using fg::cuda::convert;
namespace dd = fg::cuda::dropout_detail;

namespace {

// The CPU computes in the kernel's compute type: bfloat16 through float32.
template <class T>
using Reference = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
std::vector<T> cpu_result(const std::vector<T>& a, const std::vector<T>& b, bool backward,
                          const DropoutArgs& args) {
  using R = Reference<T>;
  const int64_t n = static_cast<int64_t>(a.size());
  std::vector<R> ra, rb;
  for (const T& v : a) ra.push_back(convert<R>(v));
  for (const T& v : b) rb.push_back(convert<R>(v));
  const Tensor ta = Tensor::from_vector(ra, {n});
  const Tensor tb = rb.empty() ? Tensor() : Tensor::from_vector(rb, {n});
  const Tensor out = Tensor::empty({n}, ta.dtype());
  Backend& cpu = backend_for(kCPU);
  if (backward)
    cpu.dropout_backward(ta, tb, out, args);
  else
    cpu.dropout(ta, out, args);
  std::vector<T> result;
  for (R v : out.to_vector<R>()) result.push_back(convert<T>(v));
  return result;
}

// n elements starting `shift` elements past a 64-byte boundary, with NaN
// guards around them that the kernels must leave alone.
template <class T>
class Buffer {
 public:
  // Room for the guards, the shift and up to 64 elements of alignment padding.
  Buffer(int64_t n, int shift)
      : n_(n), storage_(static_cast<size_t>(n + shift + 2 * kGuard + 64), convert<T>(NAN)) {
    const auto raw = reinterpret_cast<uintptr_t>(storage_.data() + kGuard);
    first_ = kGuard + static_cast<int64_t>((64 - raw % 64) % 64 / sizeof(T)) + shift;
  }
  T& at(int64_t i) { return storage_[static_cast<size_t>(first_ + i)]; }
  T* at_ptr() { return storage_.data() + first_; }
  const T* cptr() const { return storage_.data() + first_; }
  std::vector<T> values() const { return std::vector<T>(cptr(), cptr() + n_); }
  bool untouched() const {
    for (int64_t i = 0; i < static_cast<int64_t>(storage_.size()); ++i)
      if ((i < first_ || i >= first_ + n_) &&
          !std::isnan(convert<float>(storage_[static_cast<size_t>(i)])))
        return false;
    return true;
  }

 private:
  static constexpr int64_t kGuard = 64;
  int64_t n_, first_ = 0;
  std::vector<T> storage_;
};

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
// graph_shift: the kernels get the offset as a captured CUDA graph gives it, a
// captured offset plus the replay's shift read from memory (here an offset
// below the captured one, so the sum wraps around 2^64), and must draw what
// the CPU draws at the real offset.
void run(int64_t n, bool relu_first, int shift, unsigned blocks, unsigned threads,
         bool graph_shift = false) {
  using C = fg::cuda::compute_t<T>;
  const char* type = std::is_same_v<T, float>    ? "float32"
                     : std::is_same_v<T, double> ? "float64"
                                                 : "bfloat16";
  const std::string what = std::string(type) + (relu_first ? " relu_dropout" : " dropout") + " n " +
                           std::to_string(n) + " shift " + std::to_string(shift) + " grid " +
                           std::to_string(blocks) + "x" + std::to_string(threads) +
                           (graph_shift ? " graph shift" : "");
  INFO(what);
  const DropoutArgs args{0.3, 0x9e3779b97f4a7c15ull, static_cast<uint64_t>(n % 7 + 3), relu_first};
  const uint64_t replay_shift = 1000003;
  DropoutArgs kargs = args;  // what the kernels are given
  if (graph_shift) {
    kargs.offset = args.offset - replay_shift;
    kargs.offset_base = &replay_shift;
  }
  std::mt19937_64 rng(static_cast<uint64_t>(n) * 7 + static_cast<uint64_t>(shift));
  std::normal_distribution<float> dist;
  // Buffers 64-byte aligned plus `shift` elements, so that shift 1 misaligns every pointer.
  Buffer<T> x(n, shift), g(n, shift), y(n, shift), gx(n, shift);
  for (int64_t i = 0; i < n; ++i) {
    x.at(i) = convert<T>(dist(rng));
    g.at(i) = convert<T>(dist(rng));
  }
  const std::vector<T> x_in = x.values(), g_in = g.values();
  const bool vector = shift == 0;
  for (const T* p : {x.at_ptr(), g.at_ptr(), y.at_ptr(), gx.at_ptr()})
    CHECK(fg::cuda::is_aligned<4>(p) == vector);
  const float threshold = static_cast<float>(args.p);
  const C scale = static_cast<C>(1.0 / (1.0 - args.p));
  const dim3 grid(blocks), block(threads);

  // Forward.
  if (relu_first)
    fg_emu::launch(grid, block, 0, dd::dropout_kernel<T, true>, x.cptr(), y.at_ptr(), n, kargs.seed,
                   kargs.offset, kargs.offset_base, threshold, scale, vector);
  else
    fg_emu::launch(grid, block, 0, dd::dropout_kernel<T, false>, x.cptr(), y.at_ptr(), n, kargs.seed,
                   kargs.offset, kargs.offset_base, threshold, scale, vector);
  const std::vector<T> y_out = y.values();
  CHECK(same_bits(y_out, cpu_result(x_in, {}, false, args)));
  CHECK(y.untouched());

  // Backward: the drawn mask again, or the output's sign for relu_dropout.
  if (relu_first)
    fg_emu::launch(grid, block, 0, dd::dropout_backward_by_output_kernel<T>, g.cptr(), y.cptr(),
                   gx.at_ptr(), n, scale, vector);
  else
    fg_emu::launch(grid, block, 0, dd::dropout_kernel<T, false>, g.cptr(), gx.at_ptr(), n,
                   kargs.seed, kargs.offset, kargs.offset_base, threshold, scale, vector);
  CHECK(same_bits(gx.values(), cpu_result(g_in, y_out, true, args)));
  CHECK(gx.untouched());
}

template <class T>
void sizes_and_layouts() {
  for (bool relu_first : {false, true})
    for (int shift : {0, 1}) {
      for (int64_t n : {1, 3, 4, 5, 1001}) run<T>(n, relu_first, shift, 1, 64);
      run<T>(4099, relu_first, shift, 2, 96);  // 1025 blocks of four over 192 threads
    }
  for (bool relu_first : {false, true}) run<T>(1001, relu_first, 0, 2, 64, true);
}

}  // namespace

TEST_CASE("dropout kernels (emulated): float32, bitwise the CPU's") { sizes_and_layouts<float>(); }

TEST_CASE("dropout kernels (emulated): float64, bitwise the CPU's") { sizes_and_layouts<double>(); }

TEST_CASE("dropout kernels (emulated): bfloat16, the CPU's float32 rounded once") {
  sizes_and_layouts<fg::cuda::bf16>();
}
