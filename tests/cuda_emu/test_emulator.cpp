// Tests of the CUDA emulation itself: that kernels written as for the device
// compute the right thing under every schedule order, and that the faults
// the emulation exists to expose (missing barriers, divergent or deadlocked
// collectives, WMMA argument rules) are reported.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <new>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;
using fg_emu::LaunchOptions;
using fg_emu::Order;

constexpr unsigned kFull = 0xffffffffu;

const LaunchOptions kOrders[] = {{Order::forward, 0},       {Order::reverse, 0},
                                 {Order::shuffle, 1},       {Order::shuffle, 7},
                                 {Order::forward, 0, true}, {Order::reverse, 0, true},
                                 {Order::shuffle, 3, true}};

std::string order_name(const LaunchOptions& o) {
  const std::string ahead = o.warps_run_ahead ? ", warps run ahead" : "";
  switch (o.order) {
    case Order::forward:
      return "forward" + ahead;
    case Order::reverse:
      return "reverse" + ahead;
    case Order::shuffle:
      break;
  }
  return "shuffle seed " + std::to_string(o.seed) + ahead;
}

// Heap array with the 128-byte alignment cudaMalloc gives (WMMA needs 32).
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n, T fill = T{})
      : n_(n), p_(static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{128}))) {
    std::fill(p_, p_ + n_, fill);
  }
  ~DeviceArray() { ::operator delete (p_, std::align_val_t{128}); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* data() { return p_; }
  T& operator[](size_t i) { return p_[i]; }
  size_t size() const { return n_; }

 private:
  size_t n_;
  T* p_;
};

// ---------------------------------------------------------------- kernels

// Sum of each block's elements: warp sums by butterfly shuffles, one partial
// per warp in static shared memory, then warp 0 sums the partials.
__global__ void block_sum_kernel(const float* in, float* out, int n) {
  __shared__ float partial[32];
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float v = i < n ? in[i] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFull, v, offset);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFull, v, offset);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

// 2-D block (16 x 8): each thread stores one tile element, then reads two that
// other warps wrote.
__global__ void tile_exchange_kernel(const int* in, int* out) {
  __shared__ int tile[8][16];
  const unsigned bx = blockIdx.x + gridDim.x * blockIdx.y;
  const unsigned base = bx * blockDim.x * blockDim.y;
  tile[threadIdx.y][threadIdx.x] = in[base + threadIdx.y * blockDim.x + threadIdx.x];
  __syncthreads();
  out[base + threadIdx.y * blockDim.x + threadIdx.x] =
      tile[(threadIdx.y + 1) % 8][(threadIdx.x + 5) % 16] +
      3 * tile[7 - threadIdx.y][15 - threadIdx.x];
}

// Each lane writes a value and reads its right neighbour's (lane + 1 mod 32).
__global__ void neighbour_kernel(int* out, bool with_syncwarp) {
  __shared__ int slot[128];
  const unsigned lane = threadIdx.x % 32, warp_base = threadIdx.x - lane;
  slot[threadIdx.x] = static_cast<int>(1000 * blockIdx.x + 7 * threadIdx.x + 1);
  if (with_syncwarp) __syncwarp();
  out[blockIdx.x * blockDim.x + threadIdx.x] = slot[warp_base + (lane + 1) % 32];
}

// A warp stores an accumulator tile and every lane sums the whole stored tile.
__global__ void store_then_read_kernel(float* out, bool with_syncwarp) {
  __shared__ __align__(32) float tile[16 * 16];
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, static_cast<float>(blockIdx.x + 1));
  wmma::store_matrix_sync(tile, acc, 16, wmma::mem_row_major);
  if (with_syncwarp) __syncwarp();
  float sum = 0.0f;
  for (int i = 0; i < 256; ++i) sum += tile[i];
  out[blockIdx.x * 32 + threadIdx.x] = sum;
  __syncwarp();
  for (int i = static_cast<int>(threadIdx.x); i < 256; i += 32)
    tile[i] = -1.0f;  // stale for the next block
}

// C = A B for 32 x 32 bf16 matrices, a 16 x 16 output tile per warp (4 warps).
// A element (m, k) is at a[m * lda + k] (row_major) or a[k * lda + m]
// (col_major); B element (k, n) at b[k * ldb + n] or b[n * ldb + k]; C is
// stored in the layout c_layout with leading dimension ldc.
template <class LayoutA, class LayoutB>
__global__ void gemm32_kernel(const bf16* a, unsigned lda, const bf16* b, unsigned ldb, float* c,
                              unsigned ldc, wmma::layout_t c_layout) {
  constexpr bool a_row = std::is_same_v<LayoutA, wmma::row_major>;
  constexpr bool b_row = std::is_same_v<LayoutB, wmma::row_major>;
  const unsigned warp = threadIdx.x / 32, tm = warp / 2, tn = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (unsigned kt = 0; kt < 2; ++kt) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LayoutA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LayoutB> fb;
    wmma::load_matrix_sync(fa, a_row ? a + tm * 16 * lda + kt * 16 : a + kt * 16 * lda + tm * 16,
                           lda);
    wmma::load_matrix_sync(fb, b_row ? b + kt * 16 * ldb + tn * 16 : b + tn * 16 * ldb + kt * 16,
                           ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  float* tile =
      c_layout == wmma::mem_row_major ? c + tm * 16 * ldc + tn * 16 : c + tn * 16 * ldc + tm * 16;
  wmma::store_matrix_sync(tile, acc, ldc, c_layout);
}

// Accumulator load and store round trip through both memory layouts.
__global__ void accumulator_roundtrip_kernel(const float* in, float* out_row, float* out_col) {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(acc, in, 20, wmma::mem_row_major);
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= 2.0f;
  wmma::store_matrix_sync(out_row, acc, 24, wmma::mem_row_major);
  wmma::store_matrix_sync(out_col, acc, 24, wmma::mem_col_major);
}

// ---------------------------------------------------------------- helpers

float bf16_round(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

std::vector<float> random_floats(size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

}  // namespace

// ---------------------------------------------------------------- reductions and barriers

TEST_CASE("block reduction with __shfl_xor_sync and static __shared__ matches the host sum") {
  const int n = 1000;
  const unsigned threads = 256, blocks = (n + threads - 1) / threads;
  const std::vector<float> in = random_floats(n, 1);
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    std::vector<float> out(blocks, NAN);
    fg_emu::launch(o, dim3(blocks), dim3(threads), 0, block_sum_kernel, in.data(), out.data(), n);
    for (unsigned b = 0; b < blocks; ++b) {
      double ref = 0.0;
      for (unsigned i = b * threads; i < std::min<unsigned>(n, (b + 1) * threads); ++i)
        ref += in[i];
      CHECK(out[b] == doctest::Approx(ref).epsilon(1e-5));
    }
  }
}

TEST_CASE("__syncthreads orders the warps of a 2-D block") {
  const dim3 grid(3, 2), block(16, 8);
  const unsigned per_block = 128, total = per_block * 6;
  std::vector<int> in(total);
  for (unsigned i = 0; i < total; ++i) in[i] = static_cast<int>(i * 37 % 1009) + 1;
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    std::vector<int> out(total, -1);
    fg_emu::launch(o, grid, block, 0, tile_exchange_kernel, in.data(), out.data());
    int mismatches = 0;
    for (unsigned b = 0; b < 6; ++b)
      for (unsigned y = 0; y < 8; ++y)
        for (unsigned x = 0; x < 16; ++x) {
          const int* t = in.data() + b * per_block;
          const int want = t[((y + 1) % 8) * 16 + (x + 5) % 16] + 3 * t[(7 - y) * 16 + (15 - x)];
          mismatches += out[b * per_block + y * 16 + x] != want;
        }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("built-in index variables and the linear thread id's warps in a 3-D block") {
  // Block (8, 4, 2): warp 0 holds z = 0 (y 0..3), warp 1 z = 1; y == 1 is
  // lanes 8..15 of each warp.
  std::vector<unsigned> ballots(128), ids(128 * 8);
  fg_emu::launch(
      dim3(2, 1, 1), dim3(8, 4, 2), 0,
      [](unsigned* ballot, unsigned* id) {
        const unsigned tid =
            threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y;
        const unsigned g = blockIdx.x * 64 + tid;
        ballot[g] = __ballot_sync(kFull, threadIdx.y == 1);
        unsigned* r = id + g * 8;
        r[0] = threadIdx.x, r[1] = threadIdx.y, r[2] = threadIdx.z, r[3] = blockIdx.x;
        r[4] = blockDim.x * blockDim.y * blockDim.z, r[5] = gridDim.x, r[6] = gridDim.y;
        r[7] = static_cast<unsigned>(warpSize);
      },
      ballots.data(), ids.data());
  for (unsigned g = 0; g < 128; ++g) CHECK(ballots[g] == 0x0000ff00u);
  for (unsigned g = 0; g < 128; ++g) {
    const unsigned tid = g % 64;
    const unsigned* r = ids.data() + g * 8;
    CHECK(r[0] == tid % 8);
    CHECK(r[1] == tid / 8 % 4);
    CHECK(r[2] == tid / 32);
    CHECK(r[3] == g / 64);
    CHECK(r[4] == 64u);
    CHECK(r[5] == 2u);
    CHECK(r[6] == 1u);
    CHECK(r[7] == 32u);
  }
}

TEST_CASE("threads that have returned count as arrived at __syncthreads") {
  std::vector<int> out(128, 0);
  fg_emu::launch(
      dim3(1), dim3(128), 0,
      [](int* o) {
        __shared__ int flag[128];
        if (threadIdx.x >= 64) return;  // whole warps 2 and 3 leave
        flag[threadIdx.x] = 1;
        __syncthreads();
        o[threadIdx.x] = flag[63 - threadIdx.x] + __syncthreads_count(threadIdx.x % 2 == 0);
        __syncthreads();
      },
      out.data());
  for (int t = 0; t < 64; ++t) CHECK(out[t] == 1 + 32);
  for (int t = 64; t < 128; ++t) CHECK(out[t] == 0);
}

TEST_CASE("__syncthreads_count, _and and _or reduce the block's predicates") {
  std::vector<int> out(3 * 96);
  fg_emu::launch(
      dim3(1), dim3(96), 0,
      [](int* o) {
        const unsigned t = threadIdx.x;
        o[t] = __syncthreads_count(t % 3 == 0);
        o[96 + t] = __syncthreads_and(t < 96);
        o[192 + t] = __syncthreads_or(t == 95);
        if (__syncthreads_and(t != 40)) o[96 + t] = -1;
      },
      out.data());
  for (int t = 0; t < 96; ++t) {
    CHECK(out[t] == 32);
    CHECK(out[96 + t] == 1);
    CHECK(out[192 + t] == 1);
  }
}

// ---------------------------------------------------------------- warp collectives

namespace {

template <class T>
T payload(unsigned block, unsigned lane);
template <>
int payload<int>(unsigned block, unsigned lane) {
  return static_cast<int>(lane * 3 + block * 100) - 40;
}
template <>
unsigned payload<unsigned>(unsigned block, unsigned lane) {
  return 0xf0000000u + lane * 5 + block;
}
template <>
float payload<float>(unsigned block, unsigned lane) {
  return 0.25f * static_cast<float>(lane) - 3.0f + static_cast<float>(block);
}
template <>
double payload<double>(unsigned block, unsigned lane) {
  return 1e100 * (lane + 1) + block;
}
template <>
int64_t payload<int64_t>(unsigned block, unsigned lane) {
  return (static_cast<int64_t>(lane + 1) << 40) - static_cast<int64_t>(block);
}

struct ShuffleCase {
  int kind;  // 0 idx, 1 up, 2 down, 3 xor
  int arg;
  int width;
};

const ShuffleCase kShuffleCases[] = {
    {0, 5, 32},  {0, -3, 32}, {0, 40, 16}, {0, 7, 8},  {0, 2, 1},   {1, 1, 32}, {1, 3, 8},
    {1, 17, 32}, {1, 2, 1},   {2, 1, 32},  {2, 5, 16}, {2, 33, 32}, {2, 3, 4},  {3, 1, 32},
    {3, 16, 32}, {3, 6, 8},   {3, 31, 16}, {3, 4, 2},  {3, 0, 32},
};

// The CUDA programming guide's description of each shuffle, written out
// independently of the emulator's PTX-style formulation.
unsigned shuffle_source(const ShuffleCase& c, unsigned lane) {
  const unsigned w = static_cast<unsigned>(c.width), group = lane / w * w;
  switch (c.kind) {
    case 0: {
      int m = c.arg % c.width;
      if (m < 0) m += c.width;
      return group + static_cast<unsigned>(m);
    }
    case 1:
      return lane % w >= static_cast<unsigned>(c.arg) ? lane - c.arg : lane;
    case 2:
      return lane % w + static_cast<unsigned>(c.arg) < w ? lane + c.arg : lane;
    default: {
      const unsigned src = lane ^ static_cast<unsigned>(c.arg);
      return src / w > lane / w ? lane : src;  // later groups are not reachable
    }
  }
}

template <class T>
__global__ void shuffle_kernel(const ShuffleCase* cases, int n_cases, T* out) {
  const unsigned lane = threadIdx.x % 32;
  const T v = payload<T>(blockIdx.x, lane);
  for (int i = 0; i < n_cases; ++i) {
    const ShuffleCase c = cases[i];
    T r;
    switch (c.kind) {
      case 0:
        r = __shfl_sync(kFull, v, c.arg, c.width);
        break;
      case 1:
        r = __shfl_up_sync(kFull, v, static_cast<unsigned>(c.arg), c.width);
        break;
      case 2:
        r = __shfl_down_sync(kFull, v, static_cast<unsigned>(c.arg), c.width);
        break;
      default:
        r = __shfl_xor_sync(kFull, v, c.arg, c.width);
        break;
    }
    out[(blockIdx.x * n_cases + i) * blockDim.x + threadIdx.x] = r;
  }
}

template <class T>
void check_shuffles() {
  const int n_cases = static_cast<int>(std::size(kShuffleCases));
  const unsigned threads = 64, blocks = 2;
  std::vector<T> out(blocks * n_cases * threads);
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    std::fill(out.begin(), out.end(), T{});
    fg_emu::launch(o, dim3(blocks), dim3(threads), 0, shuffle_kernel<T>, kShuffleCases, n_cases,
                   out.data());
    int mismatches = 0;
    for (unsigned b = 0; b < blocks; ++b)
      for (int i = 0; i < n_cases; ++i)
        for (unsigned t = 0; t < threads; ++t) {
          const T want = payload<T>(b, shuffle_source(kShuffleCases[i], t % 32));
          const T got = out[(b * n_cases + i) * threads + t];
          if (std::memcmp(&want, &got, sizeof(T)) != 0) {
            ++mismatches;
            if (mismatches < 5)
              MESSAGE("case " << i << " block " << b << " thread " << t << " mismatched");
          }
        }
    CHECK(mismatches == 0);
  }
}

}  // namespace

TEST_CASE("shuffles follow the device's rules for every width, for 4- and 8-byte types") {
  SUBCASE("int") { check_shuffles<int>(); }
  SUBCASE("unsigned") { check_shuffles<unsigned>(); }
  SUBCASE("float") { check_shuffles<float>(); }
  SUBCASE("double") { check_shuffles<double>(); }
  SUBCASE("int64") { check_shuffles<int64_t>(); }
}

TEST_CASE("__ballot_sync, __any_sync and __all_sync") {
  std::vector<unsigned> out(64 * 5);
  fg_emu::launch(
      dim3(1), dim3(64), 0,
      [](unsigned* o) {
        const unsigned t = threadIdx.x, lane = t % 32;
        o[t] = __ballot_sync(kFull, lane % 3 == 0);
        o[64 + t] = static_cast<unsigned>(__any_sync(kFull, t == 40));
        o[128 + t] = static_cast<unsigned>(__all_sync(kFull, lane != 5));
        o[192 + t] = static_cast<unsigned>(__all_sync(kFull, t < 64));
        o[256 + t] = __ballot_sync(kFull, t >= 48);
      },
      out.data());
  for (unsigned t = 0; t < 64; ++t) {
    CHECK(out[t] == 0x49249249u);
    CHECK(out[64 + t] == (t >= 32 ? 1u : 0u));
    CHECK(out[128 + t] == 0u);
    CHECK(out[192 + t] == 1u);
    CHECK(out[256 + t] == (t >= 32 ? 0xffff0000u : 0u));
  }
}

// ---------------------------------------------------------------- schedule orders

TEST_CASE("schedule orders: forward, reverse, and a seeded shuffle redrawn every round") {
  const unsigned n = 64;
  auto run = [&](const LaunchOptions& o) {
    std::vector<int> first(2 * n, -1);
    int counter = 0;
    fg_emu::launch(
        o, dim3(1), dim3(n), 0,
        [](int* rank, int* count) {
          rank[threadIdx.x] = atomicAdd(count, 1);
          __syncthreads();
          rank[64 + threadIdx.x] = atomicAdd(count, 1) - 64;
        },
        first.data(), &counter);
    return first;
  };
  const std::vector<int> fwd = run({Order::forward, 0});
  const std::vector<int> rev = run({Order::reverse, 0});
  const std::vector<int> shuf = run({Order::shuffle, 3});
  for (unsigned t = 0; t < n; ++t) {
    CHECK(fwd[t] == static_cast<int>(t));
    CHECK(rev[t] == static_cast<int>(n - 1 - t));
  }
  std::vector<int> round1(shuf.begin(), shuf.begin() + n), round2(shuf.begin() + n, shuf.end());
  std::vector<int> sorted = round1;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> identity(n);
  std::iota(identity.begin(), identity.end(), 0);
  CHECK(sorted == identity);
  CHECK(round1 != identity);
  CHECK(round1 != round2);                  // redrawn for the second round
  CHECK(run({Order::shuffle, 3}) == shuf);  // reproducible
  CHECK(run({Order::shuffle, 4}) != shuf);
}

// ---------------------------------------------------------------- race detection

TEST_CASE("a read of another lane's write without __syncwarp is caught by the schedule order") {
  const unsigned threads = 128, blocks = 2;
  auto wrong = [&](const LaunchOptions& o, bool sync) {
    std::vector<int> out(threads * blocks, -1);
    fg_emu::launch(o, dim3(blocks), dim3(threads), 0, neighbour_kernel, out.data(), sync);
    int bad = 0;
    for (unsigned b = 0; b < blocks; ++b)
      for (unsigned t = 0; t < threads; ++t) {
        const unsigned src = t - t % 32 + (t % 32 + 1) % 32;
        bad += out[b * threads + t] != static_cast<int>(1000 * b + 7 * src + 1);
      }
    return bad;
  };
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    CHECK(wrong(o, true) == 0);
  }
  const int forward = wrong({Order::forward, 0}, false),
            reverse = wrong({Order::reverse, 0}, false);
  MESSAGE("without __syncwarp: " << forward << " wrong reads in forward order, " << reverse
                                 << " in reverse order");
  CHECK(forward + reverse > 0);
}

TEST_CASE("a store_matrix_sync read back without __syncwarp is caught by the schedule order") {
  auto wrong = [&](const LaunchOptions& o, bool sync) {
    std::vector<float> out(3 * 32, NAN);
    fg_emu::launch(o, dim3(3), dim3(32), 0, store_then_read_kernel, out.data(), sync);
    int bad = 0;
    for (unsigned b = 0; b < 3; ++b)
      for (unsigned t = 0; t < 32; ++t)
        bad += out[b * 32 + t] != 256.0f * static_cast<float>(b + 1);
    return bad;
  };
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    CHECK(wrong(o, true) == 0);
  }
  CHECK(wrong({Order::forward, 0}, false) + wrong({Order::reverse, 0}, false) > 0);
}

TEST_CASE("an early read of a stored tile sees poison, not the tile's old contents") {
  // The pattern of a softmax over stored scores: a max over the row (which
  // skips a NaN), then a shuffle that would order every later read.
  auto kernel = [](float* out, bool sync) {
    __shared__ __align__(32) float tile[16 * 16];
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 1.0f);
    wmma::store_matrix_sync(tile, acc, 16, wmma::mem_row_major);
    if (sync) __syncwarp();
    const int lane = static_cast<int>(threadIdx.x), row = lane / 2;
    float m = -INFINITY;
    for (int c = 0; c < 16; ++c) m = fmaxf(m, tile[row * 16 + c]);
    m = fmaxf(m, __shfl_xor_sync(kFull, m, 1));
    out[lane] = m;
  };
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    std::vector<float> out(32, 0.0f);
    fg_emu::launch(o, dim3(1), dim3(32), 0, kernel, out.data(), true);
    CHECK(std::all_of(out.begin(), out.end(), [](float m) { return m == 1.0f; }));
  }
  // Static shared memory keeps the last launch's ones: only the poison tells.
  std::vector<float> out(32, 0.0f);
  fg_emu::launch(dim3(1), dim3(32), 0, kernel, out.data(), false);
  CHECK(std::any_of(out.begin(), out.end(), [](float m) { return m != 1.0f; }));
}

TEST_CASE("lanes loading a tile another lane overwrites without __syncwarp are reported") {
  DeviceArray<bf16> b(16 * 16, __float2bfloat16_rn(1.0f));
  auto kernel = [](bf16* bm, bool sync) {
    __shared__ __align__(32) bf16 a_tile[16 * 16];
    for (int i = static_cast<int>(threadIdx.x); i < 256; i += 32)
      a_tile[i] = __float2bfloat16_rn(2.0f);
    __syncwarp();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    wmma::load_matrix_sync(fa, a_tile, 16);
    if (sync) __syncwarp();  // every lane has loaded before the tile changes
    if (threadIdx.x == 0) a_tile[0] = __float2bfloat16_rn(-5.0f);
    wmma::load_matrix_sync(fb, bm, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  };
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    CHECK_NOTHROW(fg_emu::launch(o, dim3(1), dim3(32), 0, kernel, b.data(), true));
  }
  // Lane 0 resumes first in forward order and changes the tile before lane 1
  // has been released from the load.
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, kernel, b.data(), false),
                       doctest::Contains("the tile changed while the warp was loading it"),
                       fg_emu::Error);
}

TEST_CASE("a WMMA load of a tile the lanes wrote without __syncwarp is reported") {
  DeviceArray<bf16> b(16 * 16, __float2bfloat16_rn(1.0f));
  // `base` differs between launches: static shared memory keeps the last one's values.
  auto kernel = [](bf16* bm, bool sync, float base) {
    __shared__ __align__(32) bf16 a_tile[16 * 16];
    for (int i = static_cast<int>(threadIdx.x); i < 256; i += 32)
      a_tile[i] = __float2bfloat16_rn(base + static_cast<float>(i % 7));
    if (sync) __syncwarp();  // every lane's part is written before the load
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    wmma::load_matrix_sync(fa, a_tile, 16);
    wmma::load_matrix_sync(fb, bm, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  };
  float base = 0.0f;
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    CHECK_NOTHROW(fg_emu::launch(o, dim3(1), dim3(32), 0, kernel, b.data(), true, base += 10.0f));
    // In every order the first lane to arrive reads parts not yet written.
    CHECK_THROWS_WITH_AS(
        fg_emu::launch(o, dim3(1), dim3(32), 0, kernel, b.data(), false, base += 10.0f),
        doctest::Contains("the tile changed while the warp was loading it"), fg_emu::Error);
  }
}

TEST_CASE("warps running ahead expose a missing __syncthreads between warps") {
  // Warp 0 writes a shared value each iteration that every warp then reads;
  // without the barrier at the top of the loop warp 0 may overwrite it before
  // the other warps have read the previous one.
  auto kernel = [](int* out, bool sync) {
    __shared__ int value[32];
    const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
    int total = 0;
    for (int it = 1; it <= 3; ++it) {
      if (sync) __syncthreads();
      if (warp == 0) value[lane] = it;
      __syncthreads();
      total += value[lane];
      __syncwarp();
    }
    out[threadIdx.x] = total;
  };
  auto wrong = [&](const LaunchOptions& o, bool sync) {
    std::vector<int> out(64, -1);
    fg_emu::launch(o, dim3(1), dim3(64), 0, kernel, out.data(), sync);
    return static_cast<int>(std::count_if(out.begin(), out.end(), [](int t) { return t != 6; }));
  };
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    CHECK(wrong(o, true) == 0);
  }
  // In rounds, the warps stay in step and the race stays hidden; run ahead,
  // warp 0 overwrites the value before warp 1 reads it.
  CHECK(wrong({Order::forward, 0, false}, false) == 0);
  CHECK(wrong({Order::forward, 0, true}, false) > 0);
}

// ---------------------------------------------------------------- faults reported

TEST_CASE("a deadlock raises an error naming the threads and their barriers") {
  auto kernel = [] {
    if (threadIdx.x % 32 < 16)
      __syncthreads();
    else
      __syncwarp();
  };
  try {
    fg_emu::launch(dim3(2), dim3(64), 0, kernel);
    FAIL("no error");
  } catch (const fg_emu::Error& e) {
    const std::string m = e.what();
    MESSAGE(m);
    CHECK(m.find("deadlock") != std::string::npos);
    CHECK(m.find("block (0,0,0)") != std::string::npos);
    CHECK(m.find("threads (0,0,0) .. (15,0,0) [warp 0 lanes 0-15] waits at __syncthreads") !=
          std::string::npos);
    CHECK(m.find("threads (16,0,0) .. (31,0,0) [warp 0 lanes 16-31] waits at __syncwarp") !=
          std::string::npos);
  }
}

TEST_CASE("a warp collective that lanes reach in different places raises an error") {
  auto kernel = [] {
    if (threadIdx.x % 32 == 7)
      (void)__shfl_xor_sync(kFull, 1.0f, 1);
    else
      __syncwarp();
  };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(64), 0, kernel),
                       doctest::Contains("wait in different warp collectives"), fg_emu::Error);
  auto width_kernel = [] { (void)__shfl_xor_sync(kFull, 1, 1, threadIdx.x == 3 ? 16 : 32); };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, width_kernel),
                       doctest::Contains("different widths"), fg_emu::Error);
  auto bad_width = [] { (void)__shfl_down_sync(kFull, 1, 1, 12); };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, bad_width),
                       doctest::Contains("width 12 is not a power of 2"), fg_emu::Error);
}

TEST_CASE("a warp collective after some lanes exited raises an error") {
  auto kernel = [] {
    if (threadIdx.x % 32 >= 16) return;
    (void)__shfl_xor_sync(kFull, 1.0f, 1);
  };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, kernel),
                       doctest::Contains("waits for lanes that have exited"), fg_emu::Error);
  auto syncwarp_kernel = [] {
    if (threadIdx.x == 31) return;
    __syncwarp();
  };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, syncwarp_kernel),
                       doctest::Contains("thread (31,0,0) [warp 0 lane 31] has exited"),
                       fg_emu::Error);
  auto partial = [] { (void)__ballot_sync(kFull, 1); };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(48), 0, partial),
                       doctest::Contains("not a multiple of 32"), fg_emu::Error);
}

TEST_CASE("a partial mask and other unsupported uses raise errors") {
  auto kernel = [] { __syncwarp(0x0000ffffu); };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, kernel),
                       doctest::Contains("thread (0,0,0) [warp 0 lane 0]: __syncwarp: mask "
                                         "0x0000ffff is not the full warp"),
                       fg_emu::Error);
  auto mixed = [] {
    if (threadIdx.x < 32)
      __syncthreads();
    else
      (void)__syncthreads_count(1);
  };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(64), 0, mixed),
                       doctest::Contains("different block barriers"), fg_emu::Error);
  auto nested = [] { fg_emu::launch(dim3(1), dim3(32), 0, [] {}); };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, nested),
                       doctest::Contains("dynamic parallelism"), fg_emu::Error);
  CHECK_THROWS_AS(__syncthreads(), fg_emu::Error);
  CHECK_THROWS_AS(__syncwarp(), fg_emu::Error);
  CHECK_THROWS_AS(fg_emu::dynamic_shared(), fg_emu::Error);
  CHECK_THROWS_AS(fg_emu::launch(dim3(1), dim3(1025), 0, [] {}), fg_emu::Error);
  CHECK_THROWS_AS(fg_emu::launch(dim3(1), dim3(32, 1, 65), 0, [] {}), fg_emu::Error);
  CHECK_THROWS_AS(fg_emu::launch(dim3(0), dim3(32), 0, [] {}), fg_emu::Error);
  CHECK_THROWS_AS(fg_emu::launch(dim3(1), dim3(32), 300 * 1024, [] {}), fg_emu::Error);
  // The emulator is still usable after every fault above.
  std::vector<float> out(1);
  const std::vector<float> in(64, 1.0f);
  fg_emu::launch(dim3(1), dim3(64), 0, block_sum_kernel, in.data(), out.data(), 64);
  CHECK(out[0] == 64.0f);
}

// ---------------------------------------------------------------- exceptions

namespace {
int g_live_guards = 0;
int g_blocks_started = 0;
struct Guard {
  Guard() { ++g_live_guards; }
  ~Guard() { --g_live_guards; }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
};

__global__ void throwing_kernel(int throw_block, int throw_thread) {
  Guard guard;
  std::vector<int> heap(10, 1);  // freed by the unwinding (leak checkers see it)
  if (threadIdx.x == 0) ++g_blocks_started;
  __syncthreads();
  if (static_cast<int>(blockIdx.x) == throw_block && static_cast<int>(threadIdx.x) == throw_thread)
    throw std::runtime_error("kernel check failed in thread " + std::to_string(threadIdx.x));
  const float v = __shfl_xor_sync(kFull, static_cast<float>(heap[0]), 1);
  __syncthreads();
  (void)v;
}
}  // namespace

TEST_CASE("exceptions thrown by kernel code propagate out of launch, every thread unwound") {
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    g_live_guards = 0;
    g_blocks_started = 0;
    CHECK_THROWS_WITH_AS(fg_emu::launch(o, dim3(4), dim3(128), 0, throwing_kernel, 1, 37),
                         "kernel check failed in thread 37", std::runtime_error);
    CHECK(g_live_guards == 0);     // the other 127 threads' destructors ran
    CHECK(g_blocks_started == 2);  // the launch stopped at the failing block
  }
  g_blocks_started = 0;
  fg_emu::launch(dim3(4), dim3(128), 0, throwing_kernel, -1, -1);
  CHECK(g_blocks_started == 4);
  CHECK(g_live_guards == 0);
}

// ---------------------------------------------------------------- dynamic shared memory

TEST_CASE("dynamic shared memory is per block, sized as launched, aligned and poisoned") {
  const size_t bytes = 128 * sizeof(float) + 12;  // not a multiple of the alignment
  std::vector<int> report(4 * 5, -1);
  fg_emu::launch(
      dim3(4), dim3(128), bytes,
      [](int* r) {
        FG_DYNAMIC_SHARED(float, s);
        int* mine = r + blockIdx.x * 5;
        if (threadIdx.x == 0) {
          const auto* raw = reinterpret_cast<const unsigned char*>(s);
          bool all_ff = true;
          for (size_t i = 0; i < fg_emu::dynamic_shared_bytes(); ++i) all_ff &= raw[i] == 0xFF;
          mine[0] = all_ff;            // the previous block's data is gone
          mine[1] = std::isnan(s[5]);  // unwritten floats read as NaN
          mine[2] = reinterpret_cast<uintptr_t>(s) % 128 == 0;
          mine[3] = static_cast<int>(fg_emu::dynamic_shared_bytes());
        }
        __syncthreads();
        s[threadIdx.x] = static_cast<float>(blockIdx.x * 1000 + threadIdx.x);
        __syncthreads();
        if (threadIdx.x == 0) {
          float sum = 0.0f;
          for (int i = 0; i < 128; ++i) sum += s[i];
          mine[4] = static_cast<int>(sum);
        }
      },
      report.data());
  for (int b = 0; b < 4; ++b) {
    CAPTURE(b);
    CHECK(report[b * 5 + 0] == 1);
    CHECK(report[b * 5 + 1] == 1);
    CHECK(report[b * 5 + 2] == 1);
    CHECK(report[b * 5 + 3] == static_cast<int>(bytes));
    CHECK(report[b * 5 + 4] == 128 * 1000 * b + 127 * 128 / 2);
  }
  void* seen = reinterpret_cast<void*>(1);
  fg_emu::launch(
      dim3(1), dim3(32), 0,
      [](void** p) {
        if (threadIdx.x == 0) *p = fg_emu::dynamic_shared();
      },
      &seen);
  CHECK(seen == nullptr);
}

// ---------------------------------------------------------------- WMMA

namespace {

template <class LayoutA, class LayoutB>
void check_gemm32(wmma::layout_t c_layout) {
  constexpr bool a_row = std::is_same_v<LayoutA, wmma::row_major>;
  constexpr bool b_row = std::is_same_v<LayoutB, wmma::row_major>;
  const unsigned lda = 40, ldb = 48, ldc = 36;  // padded leading dimensions
  const std::vector<float> av = random_floats(32 * 32, 11, -2.0f, 2.0f);
  const std::vector<float> bv = random_floats(32 * 32, 12, -2.0f, 2.0f);
  DeviceArray<bf16> a(32 * lda, __float2bfloat16_rn(NAN)), b(32 * ldb, __float2bfloat16_rn(NAN));
  for (unsigned r = 0; r < 32; ++r)
    for (unsigned c = 0; c < 32; ++c) {
      a[a_row ? r * lda + c : c * lda + r] = __float2bfloat16_rn(av[r * 32 + c]);
      b[b_row ? r * ldb + c : c * ldb + r] = __float2bfloat16_rn(bv[r * 32 + c]);
    }
  for (const LaunchOptions& o : kOrders) {
    CAPTURE(order_name(o));
    DeviceArray<float> c(32 * ldc, NAN);
    fg_emu::launch(o, dim3(1), dim3(128), 0, gemm32_kernel<LayoutA, LayoutB>, a.data(), lda,
                   b.data(), ldb, c.data(), ldc, c_layout);
    double worst = 0.0;
    for (unsigned m = 0; m < 32; ++m)
      for (unsigned n = 0; n < 32; ++n) {
        double ref = 0.0, mag = 0.0;
        for (unsigned k = 0; k < 32; ++k) {
          const double p =
              static_cast<double>(bf16_round(av[m * 32 + k])) * bf16_round(bv[k * 32 + n]);
          ref += p;
          mag += std::fabs(p);
        }
        const float got = c[c_layout == wmma::mem_row_major ? m * ldc + n : n * ldc + m];
        worst = std::max(worst, std::fabs(got - ref) / (mag + 1e-30));
      }
    // Exact bf16 products, 32 float additions: at most 32 float roundings
    // relative to the sum of magnitudes.
    CHECK(worst < 32 * 0x1p-24);
  }
}

}  // namespace

TEST_CASE("WMMA 32x32x32 bf16 GEMM over 4 warps matches a float64 GEMM") {
  using wmma::col_major;
  using wmma::row_major;
  SUBCASE("A row, B row, C row") { check_gemm32<row_major, row_major>(wmma::mem_row_major); }
  SUBCASE("A row, B col, C row") { check_gemm32<row_major, col_major>(wmma::mem_row_major); }
  SUBCASE("A col, B row, C col") { check_gemm32<col_major, row_major>(wmma::mem_col_major); }
  SUBCASE("A col, B col, C col") { check_gemm32<col_major, col_major>(wmma::mem_col_major); }
}

TEST_CASE("WMMA tf32: rounding as cvt.rna, and a 16x16x32 product against float64") {
  using wmma::__float_to_tf32;
  // 10 mantissa bits kept; half of the last kept bit rounds away from zero.
  CHECK(__float_to_tf32(1.0f) == 1.0f);
  CHECK(__float_to_tf32(1.0f + 0x1p-11f) == 1.0f + 0x1p-10f);  // tie: away from zero
  CHECK(__float_to_tf32(-1.0f - 0x1p-11f) == -1.0f - 0x1p-10f);
  CHECK(__float_to_tf32(1.0f + 0x1p-12f) == 1.0f);  // below half: down
  CHECK(__float_to_tf32(1.0f + 0x1p-11f + 0x1p-20f) == 1.0f + 0x1p-10f);
  CHECK(std::isinf(__float_to_tf32(INFINITY)));
  CHECK(std::isnan(__float_to_tf32(NAN)));

  // A (16 x 32) times B (32 x 16) in four k-steps of 8, B read column-major;
  // A is rounded with __float_to_tf32 after the load, B is not (the product
  // then reads B truncated, as the tensor cores do).
  DeviceArray<float> a(16 * 32), b(16 * 32), c(16 * 16, 0.0f);
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = dist(rng);
  for (size_t i = 0; i < b.size(); ++i) b[i] = dist(rng);  // b[n * 32 + k]: B column-major
  auto kernel = [](const float* pa, const float* pb, float* pc) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k = 0; k < 32; k += 8) {
      wmma::load_matrix_sync(fa, pa + k, 32);
      for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
      wmma::load_matrix_sync(fb, pb + k, 32);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(pc, acc, 16, wmma::mem_row_major);
  };
  fg_emu::launch(dim3(1), dim3(32), 0, kernel, a.data(), b.data(), c.data());
  const auto truncated = [](float v) {
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) & 0xffffe000u);
  };
  double worst = 0.0;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      double expected = 0.0;
      for (int k = 0; k < 32; ++k)
        expected += static_cast<double>(wmma::__float_to_tf32(a[i * 32 + k])) *
                    static_cast<double>(truncated(b[j * 32 + k]));
      worst = std::max(worst, std::abs(expected - c[i * 16 + j]));
    }
  CHECK(worst < 1e-5);  // float accumulation of 32 exact products
}

TEST_CASE("WMMA accumulator load and store in both memory layouts") {
  DeviceArray<float> in(16 * 20, NAN), row(16 * 24, -7.0f), col(16 * 24, -7.0f);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) in[r * 20 + c] = static_cast<float>(r * 100 + c);
  fg_emu::launch(dim3(1), dim3(32), 0, accumulator_roundtrip_kernel, in.data(), row.data(),
                 col.data());
  int bad = 0;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 24; ++c) {
      const float want = c < 16 ? 2.0f * static_cast<float>(r * 100 + c) : -7.0f;
      bad += row[r * 24 + c] != want;
      const float want_col = c < 16 ? 2.0f * static_cast<float>(c * 100 + r) : -7.0f;
      bad += col[r * 24 + c] != want_col;  // column r of the tile
    }
  CHECK(bad == 0);
}

TEST_CASE("WMMA pointer alignment, ldm and uniformity rules raise errors") {
  DeviceArray<bf16> tile(64 * 64, __float2bfloat16_rn(1.0f));
  DeviceArray<float> out(64 * 64, 0.0f);
  auto load = [](const bf16* p, unsigned ldm) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, p, ldm);
  };
  CHECK_NOTHROW(fg_emu::launch(dim3(1), dim3(32), 0, load, tile.data() + 16, 24u));
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, load, tile.data() + 1, 16u),
                       doctest::Contains("is not 32-byte aligned"), fg_emu::Error);
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, load, tile.data(), 12u),
                       doctest::Contains("ldm 12 is not a multiple of 8 elements"), fg_emu::Error);
  auto store = [](float* p, unsigned ldm) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 1.0f);
    wmma::store_matrix_sync(p, acc, ldm, wmma::mem_col_major);
  };
  CHECK_NOTHROW(fg_emu::launch(dim3(1), dim3(32), 0, store, out.data(), 20u));
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, store, out.data(), 18u),
                       doctest::Contains("ldm 18 is not a multiple of 4 elements"), fg_emu::Error);
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, store, out.data() + 4, 16u),
                       doctest::Contains("is not 32-byte aligned"), fg_emu::Error);
  auto per_lane_pointer = [](const bf16* p) {
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
    wmma::load_matrix_sync(fb, p + (threadIdx.x / 16) * 16, 64);
  };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(32), 0, per_lane_pointer, tile.data()),
                       doctest::Contains("lanes 0 and 16 of warp 0 pass different arguments"),
                       fg_emu::Error);
  auto half_warp = [](const bf16* p) {
    if (threadIdx.x % 32 < 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, p, 64);
    }
  };
  CHECK_THROWS_WITH_AS(fg_emu::launch(dim3(1), dim3(64), 0, half_warp, tile.data()),
                       doctest::Contains("waits for lanes that have exited"), fg_emu::Error);
  auto lane_dependent = [](float* p) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    if (threadIdx.x == 3) acc.x[9] = 1.0f;  // not element-uniform
    wmma::store_matrix_sync(p, acc, 16, wmma::mem_row_major);
  };
  CHECK_THROWS_WITH_AS(
      fg_emu::launch(dim3(1), dim3(32), 0, lane_dependent, out.data()),
      doctest::Contains("warp 0: wmma::store_matrix_sync: the stored accumulator differs between "
                        "lane 0 and lane 3 (first at element 9)"),
      fg_emu::Error);
}

// ---------------------------------------------------------------- math and atomics

TEST_CASE("math intrinsics") {
  CHECK(__expf(1.0f) == doctest::Approx(std::exp(1.0)).epsilon(1e-6));
  CHECK(__expf(-3.5f) == doctest::Approx(std::exp(-3.5)).epsilon(1e-6));
  CHECK(__logf(10.0f) == doctest::Approx(std::log(10.0)).epsilon(1e-6));
  CHECK(__fdividef(3.0f, 4.0f) == 0.75f);
  CHECK(__fdividef(1.0f, 0x1.8p126f) == 0.0f);
  CHECK(std::isnan(__fdividef(INFINITY, 0x1.8p126f)));
  CHECK(rsqrtf(4.0f) == 0.5f);
  CHECK(__frcp_rn(8.0f) == 0.125f);
  CHECK(__saturatef(1.5f) == 1.0f);
  CHECK(__saturatef(-2.0f) == 0.0f);
  CHECK(__saturatef(0.25f) == 0.25f);
  CHECK(__saturatef(NAN) == 0.0f);
  CHECK(__float_as_uint(1.0f) == 0x3f800000u);
  CHECK(__uint_as_float(0x40490fdbu) == 3.14159274101257324f);
  CHECK(__float_as_int(-2.0f) == static_cast<int>(0xc0000000u));
  CHECK(__int_as_float(0x3f000000) == 0.5f);
  CHECK(fmaxf(1.0f, NAN) == 1.0f);
  CHECK(min(3, -4) == -4);
  CHECK(max(int64_t{5}, int64_t{1} << 40) == int64_t{1} << 40);
  CHECK(__bfloat162float(__float2bfloat16_rn(1.00390625f)) == 1.0f);  // tie to even
}

TEST_CASE("atomics from every thread of several blocks") {
  struct Totals {
    float f = 0.0f;
    double d = 0.0;
    int i = 0;
    unsigned u = 0;
    unsigned long long ull = 0;
    int imax = -1000;
    int exch = -1;
    unsigned cas = 0;
  } totals;
  std::vector<int> olds(3 * 128, -2);
  fg_emu::launch(
      dim3(3), dim3(128), 0,
      [](Totals* t, int* old) {
        const unsigned g = blockIdx.x * 128 + threadIdx.x;
        atomicAdd(&t->f, 0.5f);
        atomicAdd(&t->d, 0.25);
        atomicAdd(&t->i, static_cast<int>(g));
        atomicAdd(&t->u, 2u);
        atomicAdd(&t->ull, 1ull << 33);
        atomicMax(&t->imax, static_cast<int>(g % 100));
        old[g] = atomicExch(&t->exch, static_cast<int>(g));
        atomicCAS(&t->cas, g, g + 1);  // succeeds only in order
      },
      &totals, olds.data());
  CHECK(totals.f == 192.0f);
  CHECK(totals.d == 96.0);
  CHECK(totals.i == 383 * 384 / 2);
  CHECK(totals.u == 768u);
  CHECK(totals.ull == 384ull << 33);
  CHECK(totals.imax == 99);
  CHECK(totals.exch == 383);
  CHECK(olds[0] == -1);
  CHECK(olds[383] == 382);
  CHECK(totals.cas == 384u);  // forward order: thread g finds g
}

// ---------------------------------------------------------------- speed

namespace {
__global__ void busy_kernel(const bf16* a, float* c, int barriers, int products) {
  __shared__ int counter[4];
  for (int i = 0; i < barriers; ++i) {
    if (threadIdx.x < 4) counter[threadIdx.x] = i;
    __syncthreads();
  }
  const unsigned warp = threadIdx.x / 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int i = 0; i < products; ++i) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, a + 256, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(c + warp * 256, acc, 16, wmma::mem_row_major);
  if (barriers > 0 && counter[warp] != barriers - 1) c[warp * 256] = NAN;
}
}  // namespace

TEST_CASE("speed: 128 threads, 400 __syncthreads and 48 mma_sync per warp") {
  DeviceArray<bf16> a(512, __float2bfloat16_rn(0.5f));
  DeviceArray<float> c(4 * 256, 0.0f);
  auto time_ms = [&](int barriers, int products) {
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      fg_emu::launch(dim3(1), dim3(128), 0, busy_kernel, a.data(), c.data(), barriers, products);
      const auto t1 = std::chrono::steady_clock::now();
      best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    return best;
  };
  const double barriers_only = time_ms(2000, 0);
  const double both = time_ms(400, 48);
  const fg_emu::LaunchStats stats = fg_emu::last_launch_stats();
  CHECK(c[0] == 48.0f * 16.0f * 0.25f);
  CHECK(stats.block_barriers == 400u);
  CHECK(stats.warp_collectives == 4u * (48 * 3 + 1));
  MESSAGE("__syncthreads, 128 threads: " << barriers_only * 1000.0 / 2000 << " us each; "
                                         << "400 barriers + 48 mma per warp: " << both << " ms");
  // Only optimized builds with the x86-64 context switch are held to the bound
  // (the portable swapcontext makes a system call at every switch).
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__) && defined(__x86_64__) && \
    !defined(FG_EMU_USE_UCONTEXT)
  CHECK(both < 10.0);
#endif
}
