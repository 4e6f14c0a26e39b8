// Elementwise arithmetic, comparisons, selection and in-place updates.
#include <algorithm>
#include <cmath>

#include "engine/ops/op_helpers.h"

namespace fg {

namespace detail {

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    FG_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
             " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor broadcast_view(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  NoGradGuard no_grad;
  return t.expand(shape);
}

void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  FG_CHECK(a.device() == b.device(), op, ": operands on different devices (", a.device().str(),
           " and ", b.device().str(), ")");
}

void check_inplace(const Tensor& dst, const char* op) {
  FG_CHECK(!(grad_enabled() && dst.requires_grad()), op,
           ": in-place update of a tensor that requires a gradient; use fg::NoGradGuard");
}

}  // namespace detail

using namespace detail;

bool is_comparison(BinaryOp op) {
  switch (op) {
    case BinaryOp::Eq: case BinaryOp::Ne: case BinaryOp::Lt: case BinaryOp::Le:
    case BinaryOp::Gt: case BinaryOp::Ge: case BinaryOp::LogicalAnd: case BinaryOp::LogicalOr:
      return true;
    default:
      return false;
  }
}

namespace {

// Numbers combined with this tensor stay float32 (a bfloat16 CUDA tensor): as
// PyTorch treats a Python number, the number does not promote the tensor, and
// the CUDA kernel reads it as float, so it is not rounded to bfloat16 first
// (1 / 0.9 would become 1.109375).
bool numbers_stay_float(const Tensor& t) {
  return t.device().is_cuda() && t.dtype() == DType::BFloat16 && t.dim() > 0;
}

// t with such a number (a 0-d float32 operand, as scalar_like makes them).
bool bf16_with_float_scalar(const Tensor& t, const Tensor& scalar, BinaryOp op) {
  return !is_comparison(op) && numbers_stay_float(t) && scalar.dim() == 0 && scalar.dtype() == DType::Float32;
}

// Runs a binary kernel on broadcast operands converted to a common dtype.
Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  FG_CHECK(a.defined() && b.defined(), name, ": undefined operand");
  check_same_device(a, b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  NoGradGuard no_grad;
  if (bf16_with_float_scalar(a, b, op) || bf16_with_float_scalar(b, a, op)) {
    Tensor out = Tensor::empty(shape, DType::BFloat16, a.device());
    if (out.numel()) backend_of(out).binary(op, broadcast_view(a, shape), broadcast_view(b, shape), out);
    return out;
  }
  const DType compute = promote_types(a.dtype(), b.dtype());
  const DType result = is_comparison(op) ? DType::Bool : compute;
  Tensor out = Tensor::empty(shape, result, a.device());
  if (out.numel() == 0) return out;
  const Tensor ac = broadcast_view(a.to(compute), shape);
  const Tensor bc = broadcast_view(b.to(compute), shape);
  backend_of(out).binary(op, ac, bc, out);
  return out;
}

Tensor unary_forward(UnaryOp op, const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), op == UnaryOp::LogicalNot ? DType::Bool : x.dtype(),
                             x.device());
  if (out.numel()) backend_of(x).unary(op, x, out);
  return out;
}

// The operand for a number: in t's dtype, or float32 (numbers_stay_float).
Tensor scalar_like(const Tensor& t, double value) {
  return Tensor::scalar(value, numbers_stay_float(t) ? DType::Float32 : t.dtype(), t.device());
}

}  // namespace

// ---------------------------------------------------------------- binary arithmetic

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Add, a, b, "add");
  const Shape sa = a.shape(), sb = b.shape();
  return record("add", out, {a, b}, [sa, sb](const Tensor& g, InputGrads& grads) {
    if (grads.needs(0)) grads.set(0, sum_to(g, sa));
    if (grads.needs(1)) grads.set(1, sum_to(g, sb));
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Sub, a, b, "sub");
  const Shape sa = a.shape(), sb = b.shape();
  return record("sub", out, {a, b}, [sa, sb](const Tensor& g, InputGrads& grads) {
    if (grads.needs(0)) grads.set(0, sum_to(g, sa));
    if (grads.needs(1)) grads.set(1, sum_to(neg(g), sb));
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Mul, a, b, "mul");
  // Save only what the other input's gradient needs.
  Tensor save_a = b.requires_grad() ? a.detach() : Tensor();
  Tensor save_b = a.requires_grad() ? b.detach() : Tensor();
  return record("mul", out, {a, b}, [save_a, save_b, sa = a.shape(), sb = b.shape()](
                                        const Tensor& g, InputGrads& grads) {
    if (grads.needs(0)) grads.set(0, sum_to(mul(g, save_b), sa));
    if (grads.needs(1)) grads.set(1, sum_to(mul(g, save_a), sb));
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward(BinaryOp::Div, a, b, "div");
  Tensor save_a = b.requires_grad() ? a.detach() : Tensor();
  Tensor save_b = b.detach();
  return record("div", out, {a, b}, [save_a, save_b, sa = a.shape(), sb = b.shape()](
                                        const Tensor& g, InputGrads& grads) {
    const Tensor ga = div(g, save_b);
    if (grads.needs(0)) grads.set(0, sum_to(ga, sa));
    if (grads.needs(1)) grads.set(1, sum_to(neg(mul(ga, div(save_a, save_b))), sb));
  });
}

namespace {

Tensor min_max(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  Tensor out = binary_forward(op, a, b, name);
  Tensor ad = a.detach(), bd = b.detach();
  return record(name, out, {a, b}, [op, ad, bd](const Tensor& g, InputGrads& grads) {
    // Ties send the gradient to a.
    const Tensor take_a = op == BinaryOp::Maximum ? ge(ad, bd) : le(ad, bd);
    if (grads.needs(0)) grads.set(0, sum_to(where(take_a, g, 0.0), ad.shape()));
    const Tensor zero = Tensor::scalar(0.0, g.dtype(), g.device());
    if (grads.needs(1)) grads.set(1, sum_to(where(take_a, zero, g), bd.shape()));
  });
}

}  // namespace

Tensor maximum(const Tensor& a, const Tensor& b) { return min_max(BinaryOp::Maximum, a, b, "maximum"); }
Tensor minimum(const Tensor& a, const Tensor& b) { return min_max(BinaryOp::Minimum, a, b, "minimum"); }

Tensor add(const Tensor& a, double b) { return add(a, scalar_like(a, b)); }
Tensor sub(const Tensor& a, double b) { return sub(a, scalar_like(a, b)); }
Tensor mul(const Tensor& a, double b) { return mul(a, scalar_like(a, b)); }
Tensor div(const Tensor& a, double b) { return mul(a, scalar_like(a, 1.0 / b)); }
Tensor rsub(double a, const Tensor& b) { return sub(scalar_like(b, a), b); }

Tensor pow(const Tensor& a, double exponent) {
  Tensor out = binary_forward(BinaryOp::Pow, a, scalar_like(a, exponent), "pow");
  Tensor ad = a.detach();
  return record("pow", out, {a}, [ad, exponent](const Tensor& g, InputGrads& grads) {
    grads.set(0, mul(g, mul(pow(ad, exponent - 1.0), exponent)));
  });
}

// ---------------------------------------------------------------- unary

Tensor neg(const Tensor& x) {
  return record("neg", unary_forward(UnaryOp::Neg, x), {x},
                [](const Tensor& g, InputGrads& grads) { grads.set(0, neg(g)); });
}

Tensor exp(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Exp, x);
  Tensor y = out.detach();
  return record("exp", out, {x}, [y](const Tensor& g, InputGrads& grads) { grads.set(0, mul(g, y)); });
}

Tensor log(const Tensor& x) {
  Tensor xd = x.detach();
  return record("log", unary_forward(UnaryOp::Log, x), {x},
                [xd](const Tensor& g, InputGrads& grads) { grads.set(0, div(g, xd)); });
}

Tensor sqrt(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Sqrt, x);
  Tensor y = out.detach();
  return record("sqrt", out, {x},
                [y](const Tensor& g, InputGrads& grads) { grads.set(0, div(mul(g, 0.5), y)); });
}

Tensor rsqrt(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Rsqrt, x);
  Tensor y = out.detach();
  return record("rsqrt", out, {x}, [y](const Tensor& g, InputGrads& grads) {
    grads.set(0, mul(g, mul(mul(y, mul(y, y)), -0.5)));
  });
}

Tensor relu(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Relu, x);
  Tensor y = out.detach();
  return record("relu", out, {x}, [y](const Tensor& g, InputGrads& grads) {
    grads.set(0, binary_forward(BinaryOp::ReluBackward, g, y, "relu_backward"));
  });
}

Tensor gelu(const Tensor& x) {
  Tensor xd = x.detach();
  return record("gelu", unary_forward(UnaryOp::Gelu, x), {x}, [xd](const Tensor& g, InputGrads& grads) {
    grads.set(0, binary_forward(BinaryOp::GeluBackward, g, xd, "gelu_backward"));
  });
}

Tensor tanh(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Tanh, x);
  Tensor y = out.detach();
  return record("tanh", out, {x}, [y](const Tensor& g, InputGrads& grads) {
    grads.set(0, mul(g, rsub(1.0, mul(y, y))));
  });
}

Tensor sigmoid(const Tensor& x) {
  Tensor out = unary_forward(UnaryOp::Sigmoid, x);
  Tensor y = out.detach();
  return record("sigmoid", out, {x}, [y](const Tensor& g, InputGrads& grads) {
    grads.set(0, mul(g, mul(y, rsub(1.0, y))));
  });
}

Tensor abs(const Tensor& x) {
  Tensor xd = x.detach();
  return record("abs", unary_forward(UnaryOp::Abs, x), {x}, [xd](const Tensor& g, InputGrads& grads) {
    const Tensor sign = sub(gt(xd, 0.0).to(g.dtype()), lt(xd, 0.0).to(g.dtype()));
    grads.set(0, mul(g, sign));
  });
}

Tensor square(const Tensor& x) {
  Tensor xd = x.detach();
  return record("square", unary_forward(UnaryOp::Square, x), {x},
                [xd](const Tensor& g, InputGrads& grads) { grads.set(0, mul(g, mul(xd, 2.0))); });
}

// ---------------------------------------------------------------- comparisons

#define FG_COMPARISON(NAME, OP)                                                         \
  Tensor NAME(const Tensor& a, const Tensor& b) { return binary_forward(OP, a, b, #NAME); } \
  Tensor NAME(const Tensor& a, double b) { return binary_forward(OP, a, scalar_like(a, b), #NAME); }
FG_COMPARISON(eq, BinaryOp::Eq)
FG_COMPARISON(ne, BinaryOp::Ne)
FG_COMPARISON(lt, BinaryOp::Lt)
FG_COMPARISON(le, BinaryOp::Le)
FG_COMPARISON(gt, BinaryOp::Gt)
FG_COMPARISON(ge, BinaryOp::Ge)
#undef FG_COMPARISON

Tensor logical_and(const Tensor& a, const Tensor& b) {
  return binary_forward(BinaryOp::LogicalAnd, a, b, "logical_and");
}
Tensor logical_or(const Tensor& a, const Tensor& b) {
  return binary_forward(BinaryOp::LogicalOr, a, b, "logical_or");
}
Tensor logical_not(const Tensor& a) { return unary_forward(UnaryOp::LogicalNot, a); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  FG_CHECK(cond.dtype() == DType::Bool, "where: condition must be bool, got ",
           dtype_name(cond.dtype()));
  check_same_device(cond, a, "where");
  check_same_device(a, b, "where");
  const Shape shape =
      broadcast_shapes(cond.shape(), broadcast_shapes(a.shape(), b.shape(), "where"), "where");
  const DType dtype = promote_types(a.dtype(), b.dtype());
  Tensor out = Tensor::empty(shape, dtype, a.device());
  if (out.numel()) {
    NoGradGuard no_grad;
    backend_of(out).where(broadcast_view(cond, shape), broadcast_view(a.to(dtype), shape),
                          broadcast_view(b.to(dtype), shape), out);
  }
  Tensor c = cond.detach();
  return record("where", out, {a, b}, [c, sa = a.shape(), sb = b.shape()](const Tensor& g,
                                                                          InputGrads& grads) {
    const Tensor zero = Tensor::scalar(0.0, g.dtype(), g.device());
    if (grads.needs(0)) grads.set(0, sum_to(where(c, g, zero), sa));
    if (grads.needs(1)) grads.set(1, sum_to(where(c, zero, g), sb));
  });
}

Tensor where(const Tensor& cond, const Tensor& a, double b) {
  return where(cond, a, Tensor::scalar(b, a.dtype(), a.device()));
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  return where(mask, Tensor::scalar(value, x.dtype(), x.device()), x);
}

// ---------------------------------------------------------------- in place

void copy_(const Tensor& dst, const Tensor& src) {
  check_inplace(dst, "copy_");
  check_same_device(dst, src, "copy_");
  if (dst.numel() == 0) return;
  FG_CHECK(broadcast_shapes(dst.shape(), src.shape(), "copy_") == dst.shape(), "copy_: cannot copy ",
           shape_str(src.shape()), " into ", shape_str(dst.shape()));
  backend_of(dst).copy(broadcast_view(src, dst.shape()), dst);
}

void fill_(const Tensor& dst, double value) {
  check_inplace(dst, "fill_");
  if (dst.numel()) backend_of(dst).fill(dst, value);
}

void zero_(const Tensor& dst) { fill_(dst, 0.0); }

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  check_inplace(dst, "add_");
  check_same_device(dst, src, "add_");
  if (dst.numel() == 0) return;
  NoGradGuard no_grad;
  Tensor s = src.to(dst.dtype());
  if (alpha != 1.0) s = mul(s, alpha);
  backend_of(dst).binary(BinaryOp::Add, dst, broadcast_view(s, dst.shape()), dst);
}

void mul_(const Tensor& dst, double value) {
  check_inplace(dst, "mul_");
  if (dst.numel() == 0) return;
  backend_of(dst).binary(BinaryOp::Mul, dst,
                         broadcast_view(scalar_like(dst, value), dst.shape()), dst);
}

void mul_(const Tensor& dst, const Tensor& src) {
  check_inplace(dst, "mul_");
  check_same_device(dst, src, "mul_");
  if (dst.numel() == 0) return;
  NoGradGuard no_grad;
  backend_of(dst).binary(BinaryOp::Mul, dst, broadcast_view(src.to(dst.dtype()), dst.shape()), dst);
}

// ---------------------------------------------------------------- test helpers

double max_abs_diff(const Tensor& a, const Tensor& b) {
  FG_CHECK(a.shape() == b.shape(), "max_abs_diff: shapes ", shape_str(a.shape()), " and ",
           shape_str(b.shape()));
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double worst = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    const double d = std::abs(va[i] - vb[i]);
    if (std::isnan(d)) return d;
    worst = std::max(worst, d);
  }
  return worst;
}

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape()) return false;
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i)
    if (!(std::abs(va[i] - vb[i]) <= atol + rtol * std::abs(vb[i]))) return false;
  return true;
}

}  // namespace fg
