// Host emulation of the CUDA device-code subset that fgmoe's kernels use, so
// that a kernel written in a header (.cuh) compiles with g++ from the very
// source nvcc compiles and runs on the CPU inside a test.
//
// Usage: include this header first, then the kernel header, then launch:
//   fg_emu::launch(grid, block, shared_bytes, my_kernel<64>, params);
//   fg_emu::launch({fg_emu::Order::reverse}, grid, block, shared_bytes, my_kernel<64>, params);
//
// Execution model
// - Blocks run one after another, in x, y, z order. The threads of a block are
//   fibers on the calling OS thread, each with its own stack; a fiber runs
//   without interruption until it reaches a synchronization point (a block
//   barrier, __syncwarp, a shuffle or vote, a WMMA load, store or product) or
//   returns. When every fiber waits, the scheduler releases each barrier
//   whose participants have all arrived and starts the next round.
// - The order in which a round resumes the fibers is chosen per launch
//   (forward, reverse, or a seeded shuffle redrawn every round). A thread that
//   reads what another thread of its warp or block writes, without the barrier
//   that orders the two, runs before the writer under one of these orders and
//   reads stale data; running a kernel in two orders therefore exposes a
//   missing __syncwarp or __syncthreads. In rounds the warps stay in step;
//   LaunchOptions::warps_run_ahead instead runs one warp at a time as far as
//   its next __syncthreads, which exposes a missing __syncthreads between warps.
// - A WMMA load reads the tile as the lane arrives and again when the warp is
//   released, and reports a difference (a write not ordered before or after
//   the load). A WMMA store poisons its tile (NaN, +3e38, -3e38 by turns)
//   before the lanes write their elements, so a read before __syncwarp sees
//   poison even where the old contents would have passed.
// - Threads that have returned count as arrived at __syncthreads, as on the
//   hardware. A warp collective needs all 32 lanes: one entered while a lane of
//   its warp has exited, lanes of one warp waiting in different collectives, or
//   a state where no barrier can be released (a deadlock) is reported by
//   launch() throwing fg_emu::Error that names the block, the threads and what
//   each waits on. Warps are 32 consecutive linear thread ids
//   (x + y * Dx + z * Dx * Dy); a block whose size is not a multiple of 32 has
//   a partial last warp, which may use __syncthreads but no warp collective.
//   Collectives take the full mask only (0xffffffff); any other is an error.
// - __shared__ expands to `static`: since blocks run one after another, a
//   function-local static array is exactly one block's shared array. Unlike on
//   the device, it starts zeroed and keeps the previous block's (or launch's)
//   contents; a kernel must not rely on either.
// - Dynamic shared memory (FG_DYNAMIC_SHARED) is a heap buffer of exactly the
//   launch's byte count, 128-byte aligned, refilled with 0xFF bytes before every
//   block, so that a float read before it is written is a NaN and an overrun is
//   an AddressSanitizer error.
// - Exceptions thrown by kernel code (or by the emulator's checks inside it)
//   end the launch: the other fibers are unwound (their destructors run) and
//   launch() rethrows the first exception. Kernel code must not synchronize
//   inside a catch block or in a destructor run by unwinding.
// - WMMA: every lane holds the WHOLE tile (num_elements = rows * cols of the
//   operand), whereas on the device each lane holds an unspecified part in an
//   unspecified order. Kernel code may therefore only apply element-uniform
//   operations to x[i] (fill, scale, convert the same way for every i). The
//   emulator checks at every mma_sync and store_matrix_sync that all lanes
//   hold identical fragments.
// - Each thread has a 256 KiB stack (with a guard page below it).
// - Launches from several OS threads are serialized (static shared arrays and
//   the built-in index variables are process-wide).
// - Not emulated: __CUDA_ARCH__ is not defined (kernel code compiles as host
//   code), __noinline__ (a macro would break the standard library's
//   __attribute__((__noinline__))), cooperative groups, asynchronous copies,
//   partial-mask collectives, __activemask, launches from kernel code.
#pragma once

#define FGMOE_CUDA_EMULATION 1

// The toolkit's bfloat16 and half types and conversions compile for the host;
// they also bring vector_types.h (dim3, uint3, float2, float4, int4, ...) and
// vector_functions.h (make_float4, ...), which are reused as they are.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#if !defined(__VECTOR_TYPES_H__)
#error "cuda_bf16.h was expected to provide vector_types.h (dim3, uint3, float4, ...)"
#endif

// ---------------------------------------------------------------- qualifiers

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block at a time: a function-local static is the block's shared array.
#define __shared__ static
// The GNU attribute rather than alignas: `__shared__ __align__(16) float a[8]`
// becomes `static __align__(16) float a[8]`, and a standard attribute is not
// allowed between `static` and the type.
#define __align__(n) __attribute__((aligned(n)))

// Kernels obtain their dynamic shared memory through this macro; the CUDA
// build defines the same name with `extern __shared__`.
#define FG_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::fg_emu::dynamic_shared())

namespace fg_emu {

// Every error the emulator reports (bad launch, divergent or deadlocked
// barriers, WMMA argument rules).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Order in which each scheduling round resumes a block's waiting threads.
enum class Order { forward, reverse, shuffle };

struct LaunchOptions {
  Order order = Order::forward;
  uint64_t seed = 0;  // for Order::shuffle
  // Off: the block's threads advance in rounds (every thread to its next
  // synchronization point, then barriers are released). On: one warp at a
  // time, in the order's priority, each as far as the next __syncthreads,
  // which exposes a missing __syncthreads between warps.
  bool warps_run_ahead = false;
};

// Counters of the last completed (or failed) launch on this process.
struct LaunchStats {
  uint64_t blocks = 0;
  uint64_t rounds = 0;            // scheduling rounds
  uint64_t resumes = 0;           // fiber resumptions (each one a switch in and out)
  uint64_t block_barriers = 0;    // block barrier releases
  uint64_t warp_collectives = 0;  // warp collective releases
};
LaunchStats last_launch_stats();

// The current block's dynamic shared memory: `shared_bytes` bytes from the
// launch, or nullptr when that was 0. Only valid inside a kernel.
void* dynamic_shared();
size_t dynamic_shared_bytes();

namespace detail {

// The values behind threadIdx, blockIdx, blockDim and gridDim, rewritten by
// the scheduler before it resumes a fiber.
struct Builtins {
  uint3 thread_idx{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim{1, 1, 1};
  dim3 grid_dim{1, 1, 1};
};
extern Builtins builtins;

enum class OpKind : uint8_t {
  // block-wide barriers
  syncthreads,
  syncthreads_count,
  syncthreads_and,
  syncthreads_or,
  // warp collectives
  syncwarp,
  shfl_idx,
  shfl_up,
  shfl_down,
  shfl_xor,
  ballot,
  any,
  all,
  wmma_load,
  wmma_store,
  wmma_mma,
};

struct WarpOp;
// Runs in the scheduler when all 32 lanes have arrived; lanes[l] is lane l's record.
using WarpHook = void (*)(WarpOp* const* lanes);

// One lane's arguments to a warp collective; it lives on the lane's stack
// while the lane waits. Fields that must agree across lanes are checked at
// release (kind, name, width, size, tag, ptr, ldm, layout).
struct WarpOp {
  OpKind kind = OpKind::syncwarp;
  const char* name = "";
  unsigned mask = 0xffffffffu;
  uint64_t value = 0;  // shuffle payload bits or vote predicate
  int arg = 0;         // srcLane, delta or laneMask
  int width = 32;
  int size = 0;               // payload bytes
  const void* tag = nullptr;  // identifies the fragment types of a WMMA call
  const void* ptr = nullptr;  // WMMA memory pointer
  unsigned ldm = 0;
  int layout = 0;           // 0 row-major, 1 column-major
  const void* a = nullptr;  // WMMA fragment operands
  const void* b = nullptr;
  const void* c = nullptr;
  void* d = nullptr;
  WarpHook hook = nullptr;
  uint64_t result = 0;
};

// Blocks the calling lane until all 32 lanes of its warp have called a
// collective, then performs it (filling op.result or running op.hook).
void warp_collective(WarpOp& op);
// Reports a WMMA load whose tile changed while the warp was loading it.
[[noreturn]] void fail_unstable_load();
// Blocks until every live thread of the block has arrived; returns the
// count, and or or of the predicates (0 for plain __syncthreads).
int block_barrier(OpKind kind, int predicate);
// Throws Error prefixed with the current block and thread.
[[noreturn]] void fail(const std::string& message);
[[noreturn]] void fail_outside_kernel(const char* what);
unsigned lane_id();
bool in_kernel();
void check_full_mask(const char* name, unsigned mask);

using Invoke = void (*)(const void* body);
void run_grid(const LaunchOptions& options, dim3 grid, dim3 block, size_t shared_bytes,
              Invoke invoke, const void* body);

template <class T>
inline constexpr char type_tag = 0;  // its address identifies T

template <class T>
T shuffle(OpKind kind, const char* name, unsigned mask, T var, int arg, int width) {
  // Moved as bits, as the device does; __nv_bfloat162 and __half2 have
  // user-written copy constructors, so trivially copyable is too strict.
  static_assert(std::is_trivially_destructible_v<T> && sizeof(T) <= 8,
                "shuffles move plain values of at most 8 bytes");
  check_full_mask(name, mask);
  WarpOp op;
  op.kind = kind;
  op.name = name;
  op.mask = mask;
  std::memcpy(&op.value, static_cast<const void*>(&var), sizeof(T));
  op.arg = arg;
  op.width = width;
  op.size = static_cast<int>(sizeof(T));
  warp_collective(op);
  T out;
  std::memcpy(static_cast<void*>(&out), &op.result, sizeof(T));
  return out;
}

inline unsigned vote(OpKind kind, const char* name, unsigned mask, int predicate) {
  check_full_mask(name, mask);
  WarpOp op;
  op.kind = kind;
  op.name = name;
  op.mask = mask;
  op.value = predicate != 0 ? 1u : 0u;
  warp_collective(op);
  return static_cast<unsigned>(op.result);
}

}  // namespace detail

// Runs every block of the grid to completion; throws what a thread threw, or
// Error for a launch the device would refuse or a synchronization fault.
template <class Kernel, class... Args>
void launch(const LaunchOptions& options, dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel,
            Args... args) {
  // Each thread calls the kernel with its own copies of the arguments, as the
  // device passes them by value.
  auto body = [&]() { kernel(args...); };
  using Body = decltype(body);
  detail::run_grid(
      options, grid, block, shared_bytes, [](const void* p) { (*static_cast<const Body*>(p))(); },
      &body);
}

template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
  launch(LaunchOptions{}, grid, block, shared_bytes, kernel, args...);
}

}  // namespace fg_emu

// ---------------------------------------------------------------- built-ins

inline const uint3& threadIdx = ::fg_emu::detail::builtins.thread_idx;
inline const uint3& blockIdx = ::fg_emu::detail::builtins.block_idx;
inline const dim3& blockDim = ::fg_emu::detail::builtins.block_dim;
inline const dim3& gridDim = ::fg_emu::detail::builtins.grid_dim;
inline constexpr int warpSize = 32;

// ---------------------------------------------------------------- synchronization

inline void __syncthreads() {
  ::fg_emu::detail::block_barrier(::fg_emu::detail::OpKind::syncthreads, 0);
}
inline int __syncthreads_count(int predicate) {
  return ::fg_emu::detail::block_barrier(::fg_emu::detail::OpKind::syncthreads_count, predicate);
}
inline int __syncthreads_and(int predicate) {
  return ::fg_emu::detail::block_barrier(::fg_emu::detail::OpKind::syncthreads_and, predicate);
}
inline int __syncthreads_or(int predicate) {
  return ::fg_emu::detail::block_barrier(::fg_emu::detail::OpKind::syncthreads_or, predicate);
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::fg_emu::detail::check_full_mask("__syncwarp", mask);
  ::fg_emu::detail::WarpOp op;
  op.kind = ::fg_emu::detail::OpKind::syncwarp;
  op.name = "__syncwarp";
  op.mask = mask;
  ::fg_emu::detail::warp_collective(op);
}

// Every access reaches the one copy of memory at once, so fences have nothing to order.
inline void __threadfence_block() {}
inline void __threadfence() {}

template <class T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32) {
  return ::fg_emu::detail::shuffle(::fg_emu::detail::OpKind::shfl_idx, "__shfl_sync", mask, var,
                                   srcLane, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return ::fg_emu::detail::shuffle(::fg_emu::detail::OpKind::shfl_up, "__shfl_up_sync", mask, var,
                                   static_cast<int>(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return ::fg_emu::detail::shuffle(::fg_emu::detail::OpKind::shfl_down, "__shfl_down_sync", mask,
                                   var, static_cast<int>(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32) {
  return ::fg_emu::detail::shuffle(::fg_emu::detail::OpKind::shfl_xor, "__shfl_xor_sync", mask, var,
                                   laneMask, width);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::fg_emu::detail::vote(::fg_emu::detail::OpKind::ballot, "__ballot_sync", mask, predicate);
}
inline int __any_sync(unsigned mask, int predicate) {
  return static_cast<int>(
      ::fg_emu::detail::vote(::fg_emu::detail::OpKind::any, "__any_sync", mask, predicate));
}
inline int __all_sync(unsigned mask, int predicate) {
  return static_cast<int>(
      ::fg_emu::detail::vote(::fg_emu::detail::OpKind::all, "__all_sync", mask, predicate));
}

// ---------------------------------------------------------------- math

// The fast intrinsics as the device computes them: exp and log through the
// base-2 approximations (so the rounding of x * log2(e) shows up as there).
inline float __expf(float x) { return exp2f(x * 1.4426950408889634f); }
inline float __logf(float x) { return log2f(x) * 0.6931471805599453f; }
inline float __powf(float x, float y) { return exp2f(y * log2f(x)); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
// For 2^126 < |y| < 2^128 the device's fast division returns 0 (NaN for an
// infinite x); elsewhere it is within 2 ulp of x / y.
inline float __fdividef(float x, float y) {
  const float ay = fabsf(y);
  if (ay > 0x1p126f && ay <= 0x1.fffffep127f) return std::isinf(x) ? NAN : 0.0f;
  return x / y;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
// Clamps to [0, 1]; NaN gives 0.
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }

inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }

// The device's integer and floating min and max overloads.
#define FG_EMU_MIN_MAX(T)                          \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
FG_EMU_MIN_MAX(int)
FG_EMU_MIN_MAX(unsigned)
FG_EMU_MIN_MAX(long)
FG_EMU_MIN_MAX(unsigned long)
FG_EMU_MIN_MAX(long long)
FG_EMU_MIN_MAX(unsigned long long)
#undef FG_EMU_MIN_MAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

template <class T>
inline T __ldg(const T* p) {
  return *p;
}

// ---------------------------------------------------------------- atomics
// One OS thread runs every fiber and a fiber is only switched at a
// synchronization point, so a plain read-modify-write is atomic.

#define FG_EMU_ATOMIC(name, T, expr) \
  inline T name(T* address, T val) { \
    const T old = *address;          \
    *address = (expr);               \
    return old;                      \
  }
FG_EMU_ATOMIC(atomicAdd, float, old + val)
FG_EMU_ATOMIC(atomicAdd, double, old + val)
FG_EMU_ATOMIC(atomicAdd, int, old + val)
FG_EMU_ATOMIC(atomicAdd, unsigned, old + val)
FG_EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
FG_EMU_ATOMIC(atomicSub, int, old - val)
FG_EMU_ATOMIC(atomicSub, unsigned, old - val)
FG_EMU_ATOMIC(atomicMax, int, old < val ? val : old)
FG_EMU_ATOMIC(atomicMax, unsigned, old < val ? val : old)
FG_EMU_ATOMIC(atomicMax, long long, old < val ? val : old)
FG_EMU_ATOMIC(atomicMax, unsigned long long, old < val ? val : old)
FG_EMU_ATOMIC(atomicMin, int, val < old ? val : old)
FG_EMU_ATOMIC(atomicMin, unsigned, val < old ? val : old)
FG_EMU_ATOMIC(atomicMin, long long, val < old ? val : old)
FG_EMU_ATOMIC(atomicMin, unsigned long long, val < old ? val : old)
FG_EMU_ATOMIC(atomicExch, int, val)
FG_EMU_ATOMIC(atomicExch, unsigned, val)
FG_EMU_ATOMIC(atomicExch, unsigned long long, val)
FG_EMU_ATOMIC(atomicExch, float, val)
#undef FG_EMU_ATOMIC

#define FG_EMU_ATOMIC_CAS(T)                         \
  inline T atomicCAS(T* address, T compare, T val) { \
    const T old = *address;                          \
    if (old == compare) *address = val;              \
    return old;                                      \
  }
FG_EMU_ATOMIC_CAS(int)
FG_EMU_ATOMIC_CAS(unsigned)
FG_EMU_ATOMIC_CAS(unsigned long long)
#undef FG_EMU_ATOMIC_CAS

// ---------------------------------------------------------------- WMMA

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};  // A and B elements stored as float, of which the product reads 19 bits
}  // namespace precision

// Rounds to tf32 (10 mantissa bits) to nearest, ties away from zero, as
// cvt.rna.tf32.f32; infinities and NaNs pass unchanged.
inline float __float_to_tf32(float in) {
  uint32_t bits = std::bit_cast<uint32_t>(in);
  if ((bits & 0x7f800000u) == 0x7f800000u) return in;
  bits = (bits + 0x1000u) & 0xffffe000u;
  return std::bit_cast<float>(bits);
}

}  // namespace nvcuda::wmma

namespace fg_emu::detail {

// Rows and columns of an operand of an M x N x K product.
template <class Use, int M, int N, int K>
struct FragmentShape;
template <int M, int N, int K>
struct FragmentShape<nvcuda::wmma::matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct FragmentShape<nvcuda::wmma::matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct FragmentShape<nvcuda::wmma::accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};

template <class T>
inline constexpr bool is_wmma_16bit = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;
template <class T>
inline constexpr bool is_wmma_tf32 = std::is_same_v<T, nvcuda::wmma::precision::tf32>;

// What an A or B fragment of element type T holds: tf32 is stored as float.
template <class T>
using storage_t = std::conditional_t<is_wmma_tf32<T>, float, T>;

// The shapes the device offers with float accumulation: for 16-bit inputs,
// and m16n16k8 for tf32.
template <int M, int N, int K>
inline constexpr bool is_wmma_shape = (M == 16 && N == 16 && K == 16) ||
                                      (M == 32 && N == 8 && K == 16) ||
                                      (M == 8 && N == 32 && K == 16) ||
                                      (M == 16 && N == 16 && K == 8);

// The programming guide's rules for load_matrix_sync and store_matrix_sync:
// a 256-bit aligned pointer, and a leading dimension that is a multiple of 16
// bytes (8 elements of 16 bits, 4 floats).
void check_wmma_memory(const char* name, const void* ptr, unsigned ldm, size_t element_bytes);
// Raises unless every lane's fragment behind `field` (a, b or c) equals lane 0's.
void check_uniform_fragment(WarpOp* const* lanes, const void* WarpOp::*field, const char* what,
                            size_t bytes, size_t element_bytes);

// bfloat16 is the high half of a float: a shift, which the compiler vectorizes.
inline float to_float(__nv_bfloat16 v) {
  return std::bit_cast<float>(static_cast<uint32_t>(std::bit_cast<uint16_t>(v)) << 16);
}
inline float to_float(__half v) { return __half2float(v); }
// A tf32 operand: the tensor cores read the sign, the exponent and the top 10
// mantissa bits, so an element not rounded by __float_to_tf32 is truncated.
inline float to_float(float v) {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(v) & 0xffffe000u);
}

// d = a b + c for row-major float tiles (M x K, K x N, M x N), each product
// added in float in k order. Written with explicit 4-float vectors because
// the compiler's own vectorization of this loop nest is an order of
// magnitude slower.
template <int M, int N, int K>
void gemm_tile(const float* a, const float* b, const float* c, float* d) {
  typedef float Vec4 __attribute__((vector_size(16)));
  static_assert(N % 4 == 0);
  constexpr int kVecs = N / 4;
  for (int i = 0; i < M; ++i) {
    Vec4 row[kVecs];
    std::memcpy(row, c + i * N, sizeof(row));
    for (int k = 0; k < K; ++k) {
      const float aik = a[i * K + k];
      Vec4 bk[kVecs];
      std::memcpy(bk, b + k * N, sizeof(bk));
      for (int v = 0; v < kVecs; ++v) row[v] += aik * bk[v];
    }
    std::memcpy(d + i * N, row, sizeof(row));
  }
}

// An A or B fragment of M x N x K in float, row-major: out[r * cols + c].
template <class F>
void fragment_to_float(const F& f, float* out) {
  constexpr int rows = F::num_rows, cols = F::num_cols;
  if constexpr (F::column_order) {
    for (int c = 0; c < cols; ++c)
      for (int r = 0; r < rows; ++r) out[r * cols + c] = to_float(f.x[c * rows + r]);
  } else {
    for (int i = 0; i < rows * cols; ++i) out[i] = to_float(f.x[i]);
  }
}

// The WarpOp of a WMMA load or store of fragment type F: the API's memory
// rules checked, and the arguments every lane must agree on filled in.
template <class F>
WarpOp memory_op(OpKind kind, const char* name, const void* ptr, unsigned ldm, bool col,
                 size_t element_bytes) {
  check_wmma_memory(name, ptr, ldm, element_bytes);
  WarpOp op;
  op.kind = kind;
  op.name = name;
  op.tag = &type_tag<F>;
  op.ptr = ptr;
  op.ldm = ldm;
  op.layout = col ? 1 : 0;
  return op;
}

// Element (r, c) of a tile in memory, row-major or column-major with leading dimension ldm.
template <class E>
E& element(E* ptr, unsigned ldm, bool col, int r, int c) {
  return col ? ptr[static_cast<size_t>(c) * ldm + r] : ptr[static_cast<size_t>(r) * ldm + c];
}

// A WMMA load: each lane reads the tile (with `read`) as it arrives and again
// when the warp is released, and the two must agree. A write by another lane
// that no __syncwarp orders before the load (or one by a lane that resumed
// first and ran ahead, after it) shows up under some schedule order.
template <class E, int N, class Read>
void load_stable(WarpOp& op, E (&x)[N], Read read) {
  read(x);
  warp_collective(op);
  E now[N];
  read(now);
  if (std::memcmp(static_cast<const void*>(now), static_cast<const void*>(x), sizeof(now)) != 0)
    fail_unstable_load();
}
}  // namespace fg_emu::detail

namespace nvcuda::wmma {

// Every lane holds the whole operand. A and B fragments keep it in their
// layout's order (row_major: element (r, c) at x[r * cols + c]; col_major: at
// x[c * rows + r]) so that a load copies whole lines; accumulators are
// row-major. Kernel code cannot tell, as it may only change elements
// uniformly. Fragments start as NaN (all bits set) so that one used before
// it is filled or loaded shows.
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(::fg_emu::detail::is_wmma_shape<M, N, K>,
                "emulated WMMA shapes: m16n16k16, m32n8k16, m8n32k16, m16n16k8 (tf32)");
  static_assert(
      std::is_same_v<Use, accumulator>
          ? std::is_same_v<T, float> && std::is_void_v<Layout>
          : (K == 8 ? ::fg_emu::detail::is_wmma_tf32<T>
                    : ::fg_emu::detail::is_wmma_16bit<T>)&&(std::is_same_v<Layout, row_major> ||
                                                            std::is_same_v<Layout, col_major>),
      "emulated WMMA fragments: bf16 or half A and B (tf32 for k 8) with a row_major "
      "or col_major layout, float accumulators without one");
  using element_type = ::fg_emu::detail::storage_t<T>;
  static constexpr int num_rows = ::fg_emu::detail::FragmentShape<Use, M, N, K>::rows;
  static constexpr int num_cols = ::fg_emu::detail::FragmentShape<Use, M, N, K>::cols;
  static constexpr int num_elements = num_rows * num_cols;
  static constexpr bool column_order = std::is_same_v<Layout, col_major>;
  element_type x[num_elements];
  fragment() { std::memset(static_cast<void*>(x), 0xFF, sizeof(x)); }
};

template <class Use, int M, int N, int K, class T, class Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f,
                          const ::fg_emu::detail::storage_t<T>& v) {
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

// A or B operand; the layout is the fragment's. Rows (row_major) or columns
// (col_major) are contiguous in memory and in x.
template <class Use, int M, int N, int K, class T, class Layout>
requires(!std::is_same_v<Use, accumulator>) inline void load_matrix_sync(
    fragment<Use, M, N, K, T, Layout>& f, const ::fg_emu::detail::storage_t<T>* ptr, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  using E = typename F::element_type;
  auto op =
      ::fg_emu::detail::memory_op<F>(::fg_emu::detail::OpKind::wmma_load, "wmma::load_matrix_sync",
                                     ptr, ldm, F::column_order, sizeof(E));
  constexpr int lines = F::column_order ? F::num_cols : F::num_rows;
  constexpr int length = F::num_elements / lines;
  ::fg_emu::detail::load_stable(op, f.x, [&](E* out) {
    for (int l = 0; l < lines; ++l)
      std::memcpy(static_cast<void*>(out + l * length), ptr + static_cast<size_t>(l) * ldm,
                  sizeof(E) * length);
  });
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* ptr,
                             unsigned ldm, layout_t layout) {
  using F = fragment<accumulator, M, N, K, float>;
  const bool col = layout == mem_col_major;
  auto op = ::fg_emu::detail::memory_op<F>(::fg_emu::detail::OpKind::wmma_load,
                                           "wmma::load_matrix_sync", ptr, ldm, col, sizeof(float));
  ::fg_emu::detail::load_stable(op, f.x, [&](float* out) {
    for (int i = 0; i < F::num_elements; ++i)
      out[i] = ::fg_emu::detail::element(ptr, ldm, col, i / F::num_cols, i % F::num_cols);
  });
}

template <int M, int N, int K>
inline void store_matrix_sync(float* ptr, const fragment<accumulator, M, N, K, float>& f,
                              unsigned ldm, layout_t layout) {
  using F = fragment<accumulator, M, N, K, float>;
  const bool col = layout == mem_col_major;
  auto op = ::fg_emu::detail::memory_op<F>(::fg_emu::detail::OpKind::wmma_store,
                                           "wmma::store_matrix_sync", ptr, ldm, col, sizeof(float));
  op.a = &f;
  op.hook = [](::fg_emu::detail::WarpOp* const* lanes) {
    ::fg_emu::detail::check_uniform_fragment(lanes, &::fg_emu::detail::WarpOp::a,
                                             "the stored accumulator", sizeof(F), sizeof(float));
    // Until its lane writes it, every element of the tile holds a value no
    // computation ignores: NaN, +3e38 or -3e38 by turns (a max skips a NaN,
    // but not +3e38), so an early read cannot pass for the old contents.
    const auto& op0 = *lanes[0];
    float* dst = static_cast<float*>(const_cast<void*>(op0.ptr));
    for (int i = 0; i < F::num_elements; ++i)
      ::fg_emu::detail::element(dst, op0.ldm, op0.layout != 0, i / F::num_cols, i % F::num_cols) =
          i % 3 == 0 ? NAN : (i % 3 == 1 ? 3e38f : -3e38f);
  };
  ::fg_emu::detail::warp_collective(op);
  // Lane l writes the elements whose index is l modulo 32, each exactly once,
  // when it resumes: a lane that reads the tile back without __syncwarp()
  // finds elements of lanes that have not run yet still poisoned.
  for (int i = static_cast<int>(::fg_emu::detail::lane_id()); i < F::num_elements; i += 32)
    ::fg_emu::detail::element(ptr, ldm, col, i / F::num_cols, i % F::num_cols) = f.x[i];
}

// d = a * b + c, the products accumulated in float (computed once when the
// warp has arrived, then copied to every lane).
template <int M, int N, int K, class T, class LayoutA, class LayoutB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d,
                     const fragment<matrix_a, M, N, K, T, LayoutA>& a,
                     const fragment<matrix_b, M, N, K, T, LayoutB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
  using FA = fragment<matrix_a, M, N, K, T, LayoutA>;
  using FB = fragment<matrix_b, M, N, K, T, LayoutB>;
  using FC = fragment<accumulator, M, N, K, float>;
  ::fg_emu::detail::WarpOp op;
  op.kind = ::fg_emu::detail::OpKind::wmma_mma;
  op.name = "wmma::mma_sync";
  op.tag = &::fg_emu::detail::type_tag<void(FA, FB, FC)>;
  op.a = &a;
  op.b = &b;
  op.c = &c;
  op.d = &d;
  op.hook = [](::fg_emu::detail::WarpOp* const* lanes) {
    using ::fg_emu::detail::WarpOp;
    constexpr size_t kElement = sizeof(typename FA::element_type);
    ::fg_emu::detail::check_uniform_fragment(lanes, &WarpOp::a, "operand a", sizeof(FA), kElement);
    ::fg_emu::detail::check_uniform_fragment(lanes, &WarpOp::b, "operand b", sizeof(FB), kElement);
    ::fg_emu::detail::check_uniform_fragment(lanes, &WarpOp::c, "operand c", sizeof(FC),
                                             sizeof(float));
    float av[M * K], bv[K * N], out[M * N];
    ::fg_emu::detail::fragment_to_float(*static_cast<const FA*>(lanes[0]->a), av);
    ::fg_emu::detail::fragment_to_float(*static_cast<const FB*>(lanes[0]->b), bv);
    ::fg_emu::detail::gemm_tile<M, N, K>(av, bv, static_cast<const FC*>(lanes[0]->c)->x, out);
    // c may be d in every lane, so the result is written only now.
    for (int l = 0; l < 32; ++l) std::memcpy(static_cast<FC*>(lanes[l]->d)->x, out, sizeof(out));
  };
  ::fg_emu::detail::warp_collective(op);
}

}  // namespace nvcuda::wmma
