// Matrix products through the backend's (batched) GEMM.
#include <optional>

#include "engine/autocast.h"
#include "engine/ops/op_helpers.h"

namespace fg {

using namespace detail;

namespace {

struct MatrixLayout {
  bool trans = false;
  int64_t ld = 0;
};

// How BLAS can read a rows x cols matrix with the given strides without a copy.
std::optional<MatrixLayout> matrix_layout(int64_t rows, int64_t cols, int64_t row_stride,
                                          int64_t col_stride) {
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= std::max<int64_t>(cols, 1)))
    return MatrixLayout{false, rows == 1 ? std::max<int64_t>(cols, 1) : row_stride};
  if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= std::max<int64_t>(rows, 1)))
    return MatrixLayout{true, cols == 1 ? std::max<int64_t>(rows, 1) : col_stride};
  return std::nullopt;
}

// A (batch, rows, cols) view of t expanded to batch_shape + (rows, cols) whose
// batch dimensions collapse to one stride, and its BLAS layout; copies when needed.
struct Operand {
  Tensor tensor;
  MatrixLayout layout;
  int64_t batch_stride = 0;
};

Operand prepare_operand(const Tensor& t, const Shape& batch_shape) {
  NoGradGuard no_grad;
  const int64_t rows = t.size(-2), cols = t.size(-1);
  Shape full = batch_shape;
  full.push_back(rows);
  full.push_back(cols);
  Tensor expanded = t.expand(full);
  int64_t batch = shape_numel(batch_shape);
  // The batch dimensions must collapse into one stride.
  auto collapse = [&](const Tensor& e, int64_t& stride) {
    stride = 0;
    int64_t expected = -1;
    for (int64_t d = static_cast<int64_t>(batch_shape.size()) - 1; d >= 0; --d) {
      if (e.size(d) == 1) continue;
      if (expected < 0) {
        stride = e.stride(d);
        expected = stride * e.size(d);
      } else if (e.stride(d) != expected) {
        return false;
      } else {
        expected *= e.size(d);
      }
    }
    return true;
  };
  int64_t stride = 0;
  auto layout = matrix_layout(rows, cols, expanded.stride(-2), expanded.stride(-1));
  if (!layout || !collapse(expanded, stride)) {
    // Copy the operand itself, so broadcast batches stay a stride of 0, when its
    // batches then collapse; otherwise the expanded view (broadcasts materialized).
    const Tensor compact = t.contiguous().expand(full);
    layout = matrix_layout(rows, cols, compact.stride(-2), compact.stride(-1));
    if (layout && collapse(compact, stride)) {
      expanded = compact;
    } else {
      expanded = expanded.contiguous();
      layout = matrix_layout(rows, cols, expanded.stride(-2), expanded.stride(-1));
      collapse(expanded, stride);
    }
  }
  (void)batch;
  return Operand{expanded, *layout, stride};
}

// out (batch..., m, n) = a @ b with batch dimensions broadcast; bias/relu as GEMM epilogue.
Tensor matmul_forward(const Tensor& a, const Tensor& b, const Tensor& bias) {
  FG_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands need at least 2 dimensions, got ",
           shape_str(a.shape()), " and ", shape_str(b.shape()));
  check_same_device(a, b, "matmul");
  FG_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ (", dtype_name(a.dtype()), " and ",
           dtype_name(b.dtype()), ")");
  FG_CHECK(a.size(-1) == b.size(-2), "matmul: shapes ", shape_str(a.shape()), " and ",
           shape_str(b.shape()), " cannot be multiplied");
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2);
  const Shape b_batch(b.shape().begin(), b.shape().end() - 2);
  const Shape batch_shape = broadcast_shapes(a_batch, b_batch, "matmul");
  Shape out_shape = batch_shape;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  if (out.numel() == 0) return out;

  GemmArgs args;
  args.dtype = a.dtype();
  args.m = m;
  args.n = n;
  args.k = k;
  args.c = out.data_ptr();
  args.ldc = n;
  args.stride_c = m * n;
  args.bias = bias.defined() ? bias.data_ptr() : nullptr;

  // A batch of a against one matrix b with a contiguous: fold the batch into m.
  if (b.dim() == 2 && a.dim() > 2 && a.is_contiguous()) {
    const auto lb = matrix_layout(k, n, b.stride(0), b.stride(1));
    Tensor bc = lb ? b : b.contiguous();
    const auto layout = lb ? *lb : *matrix_layout(k, n, bc.stride(0), bc.stride(1));
    args.m = shape_numel(batch_shape) * m;
    args.a = a.data_ptr();
    args.lda = k;
    args.b = bc.data_ptr();
    args.trans_b = layout.trans;
    args.ldb = layout.ld;
    args.batch = 1;
    backend_of(out).gemm(args);
    return out;
  }
  const Operand oa = prepare_operand(a, batch_shape);
  const Operand ob = prepare_operand(b, batch_shape);
  args.a = oa.tensor.data_ptr();
  args.trans_a = oa.layout.trans;
  args.lda = oa.layout.ld;
  args.stride_a = oa.batch_stride;
  args.b = ob.tensor.data_ptr();
  args.trans_b = ob.layout.trans;
  args.ldb = ob.layout.ld;
  args.stride_b = ob.batch_stride;
  args.batch = shape_numel(batch_shape);
  backend_of(out).gemm(args);
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  // Autocast: float32 CUDA operands run in bfloat16 (the cast is differentiable).
  if (autocast_lowers(a) || autocast_lowers(b)) return matmul(autocast_lower(a), autocast_lower(b));
  Tensor out = matmul_forward(a, b, Tensor());
  Tensor save_a = b.requires_grad() ? a.detach() : Tensor();
  Tensor save_b = a.requires_grad() ? b.detach() : Tensor();
  return record("matmul", out, {a, b}, [save_a, save_b, sa = a.shape(), sb = b.shape()](
                                           const Tensor& g, InputGrads& grads) {
    if (grads.needs(0)) grads.set(0, sum_to(matmul(g, save_b.transpose(-1, -2)), sa));
    if (grads.needs(1)) {
      if (sb.size() == 2 && sa.size() > 2) {
        // One matrix against a batch: the batch folds into the inner dimension, one
        // GEMM (not a product per batch element summed afterwards, which in
        // bfloat16 also rounds every partial product).
        const int64_t k = sa.back();
        grads.set(1, matmul(save_a.reshape({-1, k}).transpose(0, 1), g.reshape({-1, g.size(-1)})));
      } else {
        grads.set(1, sum_to(matmul(save_a.transpose(-1, -2), g), sb));
      }
    }
  });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (autocast_lowers(x) || autocast_lowers(weight) || autocast_lowers(bias))
    return linear(autocast_lower(x), autocast_lower(weight), autocast_lower(bias));
  FG_CHECK(weight.dim() == 2, "linear: weight must be 2-D, got ", shape_str(weight.shape()));
  FG_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "linear: input of shape ",
           shape_str(x.shape()), " does not match weight of shape ", shape_str(weight.shape()));
  const int64_t in = weight.size(1), out_features = weight.size(0);
  if (bias.defined()) {
    FG_CHECK(bias.dim() == 1 && bias.size(0) == out_features, "linear: bias of shape ",
             shape_str(bias.shape()), " for weight of shape ", shape_str(weight.shape()));
    check_same_device(x, bias, "linear");
  }
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  Tensor out;
  {
    NoGradGuard no_grad;
    const Tensor x2 = x.reshape({-1, in});
    const Tensor b = bias.defined() ? bias.to(x.dtype()).contiguous() : Tensor();
    out = matmul_forward(x2, weight.transpose(0, 1), b).reshape(out_shape);
  }
  Tensor save_x = weight.requires_grad() ? x.detach() : Tensor();
  Tensor save_w = x.requires_grad() ? weight.detach() : Tensor();
  return record("linear", out, {x, weight, bias}, [save_x, save_w, in, out_features, xs = x.shape()](
                                                      const Tensor& g, InputGrads& grads) {
    const Tensor g2 = g.reshape({-1, out_features});
    if (grads.needs(0)) grads.set(0, matmul(g2, save_w).reshape(xs));
    if (grads.needs(1)) grads.set(1, matmul(g2.transpose(0, 1), save_x.reshape({-1, in})));
    if (grads.needs(2)) grads.set(2, sum(g2, {0}));
  });
}

}  // namespace fg
