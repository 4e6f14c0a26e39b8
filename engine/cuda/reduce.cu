// Sum, max and min over the middle dimension of a contiguous (outer, r, inner)
// tensor on CUDA: the checks and the launches of reduce_kernels.cuh's kernels,
// following its plan (chunks of long reductions combined by a second launch).
#include "engine/cuda/device_utils.cuh"
#include "engine/cuda/kernels.h"
#include "engine/cuda/reduce_kernels.cuh"

namespace fg::cuda {

namespace {

using namespace reduce_detail;

template <class In, class A, class Out>
void launch_rows(const In* x, Out* out, int64_t rows, int64_t r, int64_t chunks, ReduceOp op) {
  const RowLaunch l = row_launch(rows, r, chunks);
  if (!l.block_per_task) {
    reduce_rows_warp<In, A, Out>
        <<<l.grid, kRowThreads, 0, stream()>>>(x, out, l.tasks, r, chunks, l.chunk, op);
  } else {
    reduce_rows_block<In, A, Out>
        <<<l.grid, kRowThreads, 0, stream()>>>(x, out, l.tasks, r, chunks, l.chunk, op);
  }
  FG_CUDA_LAUNCH_CHECK("reduce");
}

template <class In, class A, class Out>
void launch_columns(const In* x, Out* out, int64_t outer, int64_t r, int64_t inner, int64_t chunks,
                    ReduceOp op) {
  FG_CHECK(outer <= 65535 && chunks <= 65535, "reduce: ", outer,
           " outer slices exceed what one launch covers");
  const ColumnLaunch l = column_launch(outer, r, inner, chunks);
  reduce_columns<In, A, Out>
      <<<l.grid, l.block, 0, stream()>>>(x, out, r, inner, chunks, l.chunk, op);
  FG_CUDA_LAUNCH_CHECK("reduce");
}

template <class T>
void reduce_typed(ReduceOp op, const T* x, T* out, int64_t outer, int64_t r, int64_t inner) {
  using A = accum_t<T>;
  if (inner == 1) {
    const int64_t chunks = row_chunks(outer, r);
    if (chunks == 1) {
      launch_rows<T, A, T>(x, out, outer, r, 1, op);
    } else {
      DeviceBuffer partial(static_cast<size_t>(outer * chunks) * sizeof(A));
      launch_rows<T, A, A>(x, partial.as<A>(), outer, r, chunks, op);
      launch_rows<A, A, T>(partial.as<A>(), out, outer, chunks, 1, op);
    }
    return;
  }
  if (outer > 65535) {
    // Rare layouts: treat each outer slice as its own launch group.
    for (int64_t o = 0; o < outer; o += 65535) {
      const int64_t count = std::min<int64_t>(65535, outer - o);
      reduce_typed<T>(op, x + o * r * inner, out + o * inner, count, r, inner);
    }
    return;
  }
  const int64_t chunks = column_chunks(outer, r, inner);
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
