// Sum, max and min over the middle dimension of a contiguous (outer, r, inner)
// tensor, accumulating in float for float and bfloat16 inputs (double for
// double, int64 for int64). Max and min propagate NaN as the CPU does.
//
// Deterministic: each output is combined in a fixed order that depends only on
// the sizes. When there are few outputs and long reductions, the reduction is
// split into chunks whose partial results (in the accumulator type) go to a
// temporary buffer and are combined by a second launch of the same kernels.
#include <cmath>
#include <limits>

#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"

namespace fg::cuda {

namespace {

template <class A>
__device__ __forceinline__ bool is_nan(A v) {
  if constexpr (std::is_floating_point_v<A>)
    return math::isnan(v);
  else
    return false;
}

template <class A>
__device__ __forceinline__ A combine(ReduceOp op, A a, A b) {
  switch (op) {
    case ReduceOp::Sum:
      return a + b;
    case ReduceOp::Max:
      return (b > a || is_nan(b)) ? b : a;
    case ReduceOp::Min:
      return (b < a || is_nan(b)) ? b : a;
  }
  return a;
}

template <class A>
__device__ __forceinline__ A identity(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return A(0);
    case ReduceOp::Max:
      if constexpr (std::is_floating_point_v<A>)
        return -INFINITY;
      else
        return std::numeric_limits<A>::lowest();
    case ReduceOp::Min:
      if constexpr (std::is_floating_point_v<A>)
        return INFINITY;
      else
        return std::numeric_limits<A>::max();
  }
  return A(0);
}

template <class A>
__device__ __forceinline__ A warp_combine(ReduceOp op, A v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = combine(op, v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Task t = (row o, chunk s) reduces x[o * r + s * chunk, o * r + min(r, (s + 1) * chunk))
// into out[t]. One warp per task.
template <class In, class A, class Out>
__global__ void reduce_rows_warp(const In* x, Out* out, int64_t tasks, int64_t r, int64_t chunks,
                                 int64_t chunk, ReduceOp op) {
  const int lane = threadIdx.x % 32;
  const int64_t warps_per_grid = grid_threads() / 32;
  for (int64_t t = global_thread() / 32; t < tasks; t += warps_per_grid) {
    const int64_t o = t / chunks, s = t % chunks;
    const int64_t begin = s * chunk, end = min(r, begin + chunk);
    const In* row = x + o * r;
    A acc = identity<A>(op);
    for (int64_t i = begin + lane; i < end; i += 32) acc = combine(op, acc, convert<A>(row[i]));
    acc = warp_combine(op, acc);
    if (lane == 0) out[t] = convert<Out>(acc);
  }
}

// As reduce_rows_warp with one block of 256 threads per task, for long rows.
template <class In, class A, class Out>
__global__ void reduce_rows_block(const In* x, Out* out, int64_t tasks, int64_t r, int64_t chunks,
                                  int64_t chunk, ReduceOp op) {
  __shared__ A scratch[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t t = blockIdx.x; t < tasks; t += gridDim.x) {
    const int64_t o = t / chunks, s = t % chunks;
    const int64_t begin = s * chunk, end = min(r, begin + chunk);
    const In* row = x + o * r;
    A acc = identity<A>(op);
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
      acc = combine(op, acc, convert<A>(row[i]));
    acc = warp_combine(op, acc);
    __syncthreads();  // scratch is reused by the next task
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      A v = lane < warps ? scratch[lane] : identity<A>(op);
      v = warp_combine(op, v);
      if (lane == 0) out[t] = convert<Out>(v);
    }
  }
}

constexpr int kColumnWidth = 32, kColumnDepth = 8;

// Block (32, 8): x over inner (coalesced), y over a slice of r. Grid (column
// tiles, outer, chunks); chunk s of output (o, j) goes to out[(o * chunks + s) * inner + j].
template <class In, class A, class Out>
__global__ void reduce_columns(const In* x, Out* out, int64_t outer, int64_t r, int64_t inner,
                               int64_t chunks, int64_t chunk, ReduceOp op) {
  __shared__ A partial[kColumnDepth][kColumnWidth + 1];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColumnWidth + threadIdx.x;
  const int64_t o = blockIdx.y, s = blockIdx.z;
  const int64_t begin = s * chunk, end = min(r, begin + chunk);
  A acc = identity<A>(op);
  if (j < inner) {
    const In* base = x + o * r * inner + j;
    for (int64_t i = begin + threadIdx.y; i < end; i += kColumnDepth)
      acc = combine(op, acc, convert<A>(base[i * inner]));
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < inner) {
    A v = partial[0][threadIdx.x];
    for (int k = 1; k < kColumnDepth; ++k) v = combine(op, v, partial[k][threadIdx.x]);
    out[(o * chunks + s) * inner + j] = convert<Out>(v);
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class In, class A, class Out>
void launch_rows(const In* x, Out* out, int64_t rows, int64_t r, int64_t chunks, ReduceOp op) {
  const int64_t chunk = ceil_div(r, chunks);
  const int64_t tasks = rows * chunks;
  if (chunk < 1024) {
    const int threads = 256;
    const int64_t grid = std::min<int64_t>(ceil_div(tasks, threads / 32), 65535 * 8);
    reduce_rows_warp<In, A, Out>
        <<<grid, threads, 0, stream()>>>(x, out, tasks, r, chunks, chunk, op);
  } else {
    const int64_t grid = std::min<int64_t>(tasks, 65535 * 8);
    reduce_rows_block<In, A, Out><<<grid, 256, 0, stream()>>>(x, out, tasks, r, chunks, chunk, op);
  }
  FG_CUDA_LAUNCH_CHECK("reduce");
}

template <class In, class A, class Out>
void launch_columns(const In* x, Out* out, int64_t outer, int64_t r, int64_t inner, int64_t chunks,
                    ReduceOp op) {
  FG_CHECK(outer <= 65535 && chunks <= 65535, "reduce: ", outer,
           " outer slices exceed what one launch covers");
  const int64_t chunk = ceil_div(r, chunks);
  const dim3 grid(static_cast<unsigned>(ceil_div(inner, kColumnWidth)),
                  static_cast<unsigned>(outer), static_cast<unsigned>(chunks));
  const dim3 block(kColumnWidth, kColumnDepth);
  reduce_columns<In, A, Out>
      <<<grid, block, 0, stream()>>>(x, out, outer, r, inner, chunks, chunk, op);
  FG_CUDA_LAUNCH_CHECK("reduce");
}

template <class T>
void reduce_typed(ReduceOp op, const T* x, T* out, int64_t outer, int64_t r, int64_t inner) {
  using A = accum_t<T>;
  if (inner == 1) {
    // Enough rows fill the GPU; otherwise split long rows into about 4096-long chunks
    // (at least 2048 long, so the first pass still takes the block kernel).
    int64_t chunks = 1;
    if (outer < 1024 && r > 8192) chunks = std::min(ceil_div(r, 4096), ceil_div(1024, outer));
    if (chunks == 1) {
      launch_rows<T, A, T>(x, out, outer, r, 1, op);
    } else {
      DeviceBuffer partial(static_cast<size_t>(outer * chunks) * sizeof(A));
      launch_rows<T, A, A>(x, partial.as<A>(), outer, r, chunks, op);
      launch_rows<A, A, T>(partial.as<A>(), out, outer, chunks, 1, op);
    }
    return;
  }
  // Columns: split r when the (tile, outer) blocks alone would not fill the GPU.
  const int64_t blocks = ceil_div(inner, kColumnWidth) * outer;
  int64_t chunks = 1;
  if (blocks < 512 && r > 256) chunks = std::min(ceil_div(r, 128), ceil_div(512, blocks));
  chunks = std::min<int64_t>(chunks, 65535);
  if (outer > 65535) {
    // Rare layouts: treat each outer slice as its own launch group.
    for (int64_t o = 0; o < outer; o += 65535) {
      const int64_t count = std::min<int64_t>(65535, outer - o);
      reduce_typed<T>(op, x + o * r * inner, out + o * inner, count, r, inner);
    }
    return;
  }
  if (chunks == 1) {
    launch_columns<T, A, T>(x, out, outer, r, inner, 1, op);
  } else {
    DeviceBuffer partial(static_cast<size_t>(outer * chunks * inner) * sizeof(A));
    launch_columns<T, A, A>(x, partial.as<A>(), outer, r, inner, chunks, op);
    launch_columns<A, A, T>(partial.as<A>(), out, outer, chunks, inner, 1, op);
  }
}

}  // namespace

void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner,
            const Tensor& out) {
  FG_CHECK(x.is_contiguous() && out.is_contiguous(), "reduce: needs contiguous tensors");
  FG_CHECK(x.dtype() == out.dtype(), "reduce: input and output dtypes differ");
  FG_CHECK(x.numel() == outer * r * inner && out.numel() == outer * inner,
           "reduce: sizes do not match the tensors");
  if (out.numel() == 0) return;
  FG_CHECK(r > 0 || op == ReduceOp::Sum, "reduce: empty reduction has no identity");
  if (r == 0) {
    fill(out, 0.0);
    return;
  }
  if (x.dtype() == DType::Int64) {
    FG_CHECK(op == ReduceOp::Sum, "reduce: only sums of int64 tensors are supported");
    reduce_typed<int64_t>(op, x.data<int64_t>(), out.data<int64_t>(), outer, r, inner);
    return;
  }
  FG_CUDA_DISPATCH_FLOATING(x.dtype(), "reduce", [&] {
    reduce_typed<scalar_t>(op, static_cast<const scalar_t*>(x.data_ptr()),
                           static_cast<scalar_t*>(out.data_ptr()), outer, r, inner);
  });
}

}  // namespace fg::cuda
