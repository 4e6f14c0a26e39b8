// Softmax, layer norm, dropout, losses and attention.
#include <cmath>

#include "engine/autocast.h"
#include "engine/ops/op_helpers.h"

namespace fg {

using namespace detail;

namespace {

Tensor softmax_impl(const Tensor& x_in, const std::vector<int64_t>& dims_in, bool log) {
  // Autocast runs softmax in float32, as PyTorch does.
  const Tensor x = autocast_raise(x_in);
  const char* name = log ? "log_softmax" : "softmax";
  FG_CHECK(is_floating(x.dtype()), name, ": needs a floating tensor, got ", dtype_name(x.dtype()));
  FG_CHECK(!dims_in.empty(), name, ": no dimension given");
  const auto dims = normalize_dims(dims_in, x.dim(), name);
  int64_t outer, n, inner;
  block_sizes(x.shape(), dims, name, outer, n, inner);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() == 0) return out;
  {
    NoGradGuard no_grad;
    backend_of(x).softmax(x.contiguous(), out, outer, n, inner, log);
  }
  Tensor y = out.detach();
  return record(name, out, {x}, [y, outer, n, inner, log](const Tensor& g, InputGrads& grads) {
    Tensor gx = Tensor::empty(y.shape(), y.dtype(), y.device());
    backend_of(y).softmax_backward(y, g.contiguous(), gx, outer, n, inner, log);
    grads.set(0, gx);
  });
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, {dim}, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_impl(x, {dim}, true); }
Tensor softmax(const Tensor& x, const std::vector<int64_t>& dims) { return softmax_impl(x, dims, false); }
Tensor log_softmax(const Tensor& x, const std::vector<int64_t>& dims) {
  return softmax_impl(x, dims, true);
}

Tensor layer_norm(const Tensor& x_in, int64_t normalized_ndim, const Tensor& weight_in,
                  const Tensor& bias_in, double eps) {
  // Autocast runs layer_norm in float32 (input and parameters), as PyTorch does.
  const Tensor x = autocast_raise(x_in);
  const Tensor weight = autocast_raise(weight_in);
  const Tensor bias = autocast_raise(bias_in);
  FG_CHECK(normalized_ndim >= 1 && normalized_ndim <= x.dim(), "layer_norm: cannot normalize ",
           normalized_ndim, " dimensions of a tensor of shape ", shape_str(x.shape()));
  int64_t cols = 1;
  for (int64_t d = x.dim() - normalized_ndim; d < x.dim(); ++d) cols *= x.size(d);
  const int64_t rows = cols ? x.numel() / cols : 0;
  const Shape norm_shape(x.shape().end() - normalized_ndim, x.shape().end());
  for (const Tensor* p : {&weight, &bias})
    if (p->defined()) {
      FG_CHECK(p->numel() == cols, "layer_norm: parameter of shape ", shape_str(p->shape()),
               " for normalized shape ", shape_str(norm_shape));
      check_same_device(x, *p, "layer_norm");
    }
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  // Statistics in float32 for 16-bit inputs, else in the input's type.
  const DType stats = float_math_dtype(x.dtype());
  Tensor mean = Tensor::empty({rows}, stats, x.device());
  Tensor rstd = Tensor::empty({rows}, stats, x.device());
  Tensor xc;
  {
    NoGradGuard no_grad;
    xc = x.contiguous();
    if (out.numel())
      backend_of(x).layer_norm(xc, weight.defined() ? weight.contiguous() : Tensor(),
                               bias.defined() ? bias.contiguous() : Tensor(), eps, rows, cols, out,
                               mean, rstd);
  }
  Tensor wd = weight.defined() ? weight.detach().contiguous() : Tensor();
  Tensor xd = xc.detach();
  const Shape wshape = weight.defined() ? weight.shape() : Shape{};
  const Shape bshape = bias.defined() ? bias.shape() : Shape{};
  const DType bias_dtype = bias.defined() ? bias.dtype() : x.dtype();
  return record("layer_norm", out, {x, weight, bias},
                [xd, wd, mean, rstd, rows, cols, wshape, bshape, bias_dtype](const Tensor& g, InputGrads& grads) {
                  Tensor gx = grads.needs(0) ? Tensor::empty(xd.shape(), xd.dtype(), xd.device())
                                             : Tensor();
                  Tensor gw = grads.needs(1) ? Tensor::empty(wshape, wd.dtype(), wd.device())
                                             : Tensor();
                  Tensor gb = grads.needs(2) ? Tensor::empty(bshape, bias_dtype, xd.device())
                                             : Tensor();
                  if (xd.numel())
                    backend_of(xd).layer_norm_backward(g.contiguous(), xd, mean, rstd, wd, rows,
                                                       cols, gx, gw, gb);
                  grads.set(0, gx);
                  grads.set(1, gw);
                  grads.set(2, gb);
                });
}

namespace {

// The replay shift of a draw inside a CUDA graph capture (engine/cuda_graph.h),
// which only CUDA kernels read: a draw for another device there would be made
// now, once, and its offsets drawn again by the replays.
const uint64_t* graph_offset_base(const Generator& gen, const Device& device, const char* op) {
  FG_CHECK(!gen.offset_base() || device.is_cuda(), op, " on ", device.str(),
           " inside a CUDA graph capture: only CUDA work can be captured");
  return gen.offset_base();
}

Tensor dropout_impl(const Tensor& x, double p, bool training, Generator& gen, bool relu_first) {
  const char* name = relu_first ? "relu_dropout" : "dropout";
  FG_CHECK(p >= 0.0 && p <= 1.0, name, ": probability must be in [0, 1], got ", p);
  FG_CHECK(is_floating(x.dtype()), name, ": needs a floating tensor, got ", dtype_name(x.dtype()));
  if (!training || p == 0.0) return relu_first ? relu(x) : x;
  if (p == 1.0) return mul(relu_first ? relu(x) : x, 0.0);
  if (x.numel() == 0) return relu_first ? relu(x) : x;  // nothing drawn, as the mask of nothing
  // One pass, no mask: element i is kept when the Philox draw of dropout_mask
  // keeps it; the kept values are multiplied by 1/(1-p) in float (double for
  // double) and rounded once, as PyTorch does (also for bfloat16).
  DropoutArgs args{p, gen.seed(), gen.next_offset(), relu_first};
  args.offset_base = graph_offset_base(gen, x.device(), name);
  const Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  {
    NoGradGuard no_grad;
    backend_of(x).dropout(xc, out, args);
  }
  // relu_dropout keeps its output (kept and positive where it is above zero);
  // dropout keeps nothing but the generator state.
  const Tensor y = relu_first ? out.detach() : Tensor();
  return record(name, out, {x}, [args, y](const Tensor& g, InputGrads& grads) {
    if (!grads.needs(0)) return;
    const Tensor gc = g.contiguous();
    Tensor gx = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
    backend_of(gc).dropout_backward(gc, y, gx, args);
    grads.set(0, gx);
  });
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  return dropout_impl(x, p, training, gen, false);
}

Tensor relu_dropout(const Tensor& x, double p, bool training, Generator& gen) {
  return dropout_impl(x, p, training, gen, true);
}

Tensor add_layer_norm(const Tensor& residual, const Tensor& x_in, const Tensor& weight_in,
                      const Tensor& bias_in, double eps, double p, bool training, Generator& gen) {
  FG_CHECK(p >= 0.0 && p <= 1.0, "add_layer_norm: dropout probability must be in [0, 1], got ", p);
  const Tensor weight = autocast_raise(weight_in), bias = autocast_raise(bias_in);
  const DType type = residual.dtype();
  const int64_t cols = residual.dim() ? residual.size(-1) : 0;
  auto param_fits = [&](const Tensor& t) {
    return !t.defined() ||
           (t.dtype() == type && t.numel() == cols && t.device() == residual.device());
  };
  // Fused where the composite's add keeps the residual's float type: the same
  // type on both sides, or a bfloat16 branch onto a float32 stream on CUDA
  // (autocast). Anything else (and no dropout) runs as the composite.
  const bool fused =
      training && p > 0.0 && p < 1.0 && residual.numel() > 0 && residual.shape() == x_in.shape() &&
      residual.device() == x_in.device() && (type == DType::Float32 || type == DType::Float64) &&
      (x_in.dtype() == type ||
       (type == DType::Float32 && x_in.device().is_cuda() && x_in.dtype() == DType::BFloat16)) &&
      param_fits(weight) && param_fits(bias);
  if (!fused)
    return layer_norm(add(residual, dropout(x_in, p, training, gen)), 1, weight_in, bias_in, eps);

  const int64_t rows = residual.numel() / cols;
  const DType stats = float_math_dtype(type);
  AddLayerNormArgs a;
  a.residual = residual.contiguous();
  a.x = x_in.contiguous();
  a.weight = weight.defined() ? weight.detach().contiguous() : Tensor();
  a.bias = bias.defined() ? bias.detach().contiguous() : Tensor();
  a.dropout = DropoutArgs{p, gen.seed(), gen.next_offset(), false};
  a.dropout.offset_base = graph_offset_base(gen, residual.device(), "add_layer_norm");
  a.eps = eps;
  a.rows = rows;
  a.cols = cols;
  a.out = Tensor::empty(residual.shape(), type, residual.device());
  a.sum = Tensor::empty(residual.shape(), type, residual.device());
  a.mean = Tensor::empty({rows}, stats, residual.device());
  a.rstd = Tensor::empty({rows}, stats, residual.device());
  {
    NoGradGuard no_grad;
    backend_of(residual).add_layer_norm(a);
  }
  const AddLayerNormBackwardArgs b = a.backward();
  const DType x_type = x_in.dtype();
  const Shape wshape = weight.defined() ? weight.shape() : Shape{};
  const Shape bshape = bias.defined() ? bias.shape() : Shape{};
  return record("add_layer_norm", a.out, {residual, x_in, weight, bias},
                [b, x_type, wshape, bshape](const Tensor& g, InputGrads& grads) {
                  AddLayerNormBackwardArgs args = b;
                  args.grad = g.contiguous();
                  const Device device = b.sum.device();
                  if (grads.needs(0))
                    args.grad_residual = Tensor::empty(b.sum.shape(), b.sum.dtype(), device);
                  if (grads.needs(1)) args.grad_x = Tensor::empty(b.sum.shape(), x_type, device);
                  if (grads.needs(2))
                    args.grad_weight = Tensor::empty(wshape, b.sum.dtype(), device);
                  if (grads.needs(3)) args.grad_bias = Tensor::empty(bshape, b.sum.dtype(), device);
                  backend_for(device).add_layer_norm_backward(args);
                  grads.set(0, args.grad_residual);
                  grads.set(1, args.grad_x);
                  grads.set(2, args.grad_weight);
                  grads.set(3, args.grad_bias);
                });
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing) {
  FG_CHECK(logits.dim() == 2, "cross_entropy: logits must be (N, C), got ",
           shape_str(logits.shape()));
  FG_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), "cross_entropy: labels of shape ",
           shape_str(labels.shape()), " for logits of shape ", shape_str(logits.shape()));
  FG_CHECK(!is_floating(labels.dtype()),
           "cross_entropy: labels must be integers (use soft_cross_entropy for probabilities)");
  FG_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0,
           "cross_entropy: label_smoothing must be in [0, 1], got ", label_smoothing);
  const int64_t classes = logits.size(1);
  {
    const auto values = labels.to_vector<int64_t>();
    for (int64_t v : values)
      FG_CHECK(v >= 0 && v < classes, "cross_entropy: label ", v, " out of range for ", classes,
               " classes");
  }
  // Targets in float32 (float64 for float64 logits), as PyTorch runs the loss in
  // float32 under autocast: bfloat16 would round 1 - s + s/C.
  Tensor target = one_hot(labels, classes, float_math_dtype(logits.dtype()));
  if (label_smoothing > 0.0)
    target = add(mul(target, 1.0 - label_smoothing), label_smoothing / static_cast<double>(classes));
  return soft_cross_entropy(logits, target);
}

Tensor soft_cross_entropy(const Tensor& logits, const Tensor& targets) {
  FG_CHECK(logits.shape() == targets.shape(), "soft_cross_entropy: targets of shape ",
           shape_str(targets.shape()), " for logits of shape ", shape_str(logits.shape()));
  const Tensor logp = log_softmax(logits, -1);
  return neg(mean(sum(mul(targets, logp), {-1})));
}

namespace {

// The (B, H, L, D) view a fused attention kernel takes: 3-D tensors get H = 1
// and the last dimension must have unit stride. Outside autograd.
Tensor attention_view(const Tensor& t) {
  Tensor v = t.detach();
  if (v.dim() == 3) v = v.unsqueeze(1);
  if (v.stride(3) != 1 && v.size(3) > 1) v = v.contiguous();
  return v;
}

// An empty (B, H, L, D) tensor stored as (B, L, H, D): the layout in which the
// heads' outputs merge back into (B, L, H * D) without a copy.
Tensor empty_heads_last(int64_t b, int64_t h, int64_t l, int64_t d, DType dtype, Device device) {
  return Tensor::empty({b, l, h, d}, dtype, device).transpose(1, 2);
}

// Runs the backend's fused forward on (B, H, L, D) head views and returns what
// the backward needs; args.out is written with the result (heads last).
AttentionForwardArgs fused_attention_forward(const AttentionShape& shape, const Tensor& q4,
                                             const Tensor& k4, const Tensor& v4, double scale,
                                             double dropout_p, Generator* gen) {
  Generator& generator = gen ? *gen : default_generator();
  AttentionForwardArgs args;
  args.shape = shape;
  args.scale = scale;
  args.dropout_p = shape.dropout ? dropout_p : 0.0;
  args.seed = generator.seed();
  args.offset = shape.dropout ? generator.next_offset() : 0;  // one draw, as the composite's dropout
  args.offset_base = shape.dropout ? graph_offset_base(generator, q4.device(), "attention") : nullptr;
  NoGradGuard no_grad;
  args.q = q4;
  args.k = k4;
  args.v = v4;
  args.out = empty_heads_last(shape.batch, shape.heads, shape.q_len, shape.head_dim, shape.dtype,
                              q4.device());
  args.logsumexp = Tensor::empty({shape.batch * shape.heads * shape.q_len},
                                 float_math_dtype(shape.dtype), q4.device());
  backend_of(q4).attention(args);
  return args;
}

// The fused backward: grad_q, grad_k, grad_v are (B, H, L, D) views to write.
void fused_attention_backward(const AttentionForwardArgs& saved, const Tensor& grad_out4,
                              const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v) {
  AttentionBackwardArgs b;
  b.shape = saved.shape;
  b.q = saved.q;
  b.k = saved.k;
  b.v = saved.v;
  b.out = saved.out;
  b.logsumexp = saved.logsumexp;
  b.scale = saved.scale;
  b.dropout_p = saved.dropout_p;
  b.seed = saved.seed;
  b.offset = saved.offset;
  b.offset_base = saved.offset_base;
  b.grad_out = grad_out4;
  b.grad_q = grad_q;
  b.grad_k = grad_k;
  b.grad_v = grad_v;
  backend_of(saved.q).attention_backward(b);
}

// The fused kernel of the backend, when it has one for these inputs.
bool try_fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                         double dropout_p, bool drop, Generator* gen, Tensor& result) {
  if (q.dim() < 3 || q.dim() > 4 || q.dtype() != k.dtype() || q.dtype() != v.dtype()) return false;
  if (q.device() != k.device() || q.device() != v.device()) return false;
  for (int64_t d = 0; d < q.dim() - 2; ++d)
    if (q.size(d) != k.size(d) || q.size(d) != v.size(d)) return false;  // no broadcasting
  if (k.size(-1) != v.size(-1)) return false;
  if (drop && dropout_p >= 1.0) return false;  // everything dropped: the composite's zeros
  const bool three_d = q.dim() == 3;
  AttentionShape shape;
  shape.dtype = q.dtype();
  shape.batch = q.size(0);
  shape.heads = three_d ? 1 : q.size(1);
  shape.q_len = q.size(-2);
  shape.kv_len = k.size(-2);
  shape.head_dim = q.size(-1);
  shape.dropout = drop;
  if (!backend_of(q).supports_attention(shape)) return false;

  const AttentionForwardArgs saved = fused_attention_forward(
      shape, attention_view(q), attention_view(k), attention_view(v), scale, dropout_p, gen);
  // A tensor of its own (detach), so the node's saved copy does not point back at it.
  const Tensor out = three_d ? saved.out.squeeze(1) : saved.out.detach();
  result = record("scaled_dot_product_attention", out, {q, k, v},
                  [saved, three_d](const Tensor& g, InputGrads& grads) {
                    const AttentionShape& s = saved.shape;
                    const Device device = saved.q.device();
                    const Tensor grad_q = empty_heads_last(s.batch, s.heads, s.q_len, s.head_dim, s.dtype, device);
                    const Tensor grad_k = empty_heads_last(s.batch, s.heads, s.kv_len, s.head_dim, s.dtype, device);
                    const Tensor grad_v = empty_heads_last(s.batch, s.heads, s.kv_len, s.head_dim, s.dtype, device);
                    fused_attention_backward(saved, attention_view(g.to(s.dtype)), grad_q, grad_k, grad_v);
                    auto shaped = [three_d](const Tensor& t) { return three_d ? t.squeeze(1) : t; };
                    grads.set(0, shaped(grad_q));
                    grads.set(1, shaped(grad_k));
                    grads.set(2, shaped(grad_v));
                  });
  return true;
}

// (B, L, 3E) -> the (B, H, L, D) view of part `which` (0: q, 1: k, 2: v).
Tensor packed_part(const Tensor& qkv, int64_t which, int64_t heads) {
  const int64_t b = qkv.size(0), l = qkv.size(1), e = qkv.size(2) / 3;
  return qkv.slice(2, which * e, (which + 1) * e).reshape({b, l, heads, e / heads}).transpose(1, 2);
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    double dropout_p, bool training, Generator* gen) {
  // Autocast: float32 CUDA operands run in bfloat16.
  const Tensor q = autocast_lower(q_in), k = autocast_lower(k_in), v = autocast_lower(v_in);
  FG_CHECK(q.dim() >= 2 && q.dim() == k.dim() && k.dim() == v.dim(),
           "scaled_dot_product_attention: q, k, v of shapes ", shape_str(q.shape()), ", ",
           shape_str(k.shape()), ", ", shape_str(v.shape()));
  FG_CHECK(q.size(-1) == k.size(-1) && k.size(-2) == v.size(-2),
           "scaled_dot_product_attention: q, k, v of shapes ", shape_str(q.shape()), ", ",
           shape_str(k.shape()), ", ", shape_str(v.shape()), " do not match");
  FG_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0,
           "scaled_dot_product_attention: dropout probability must be in [0, 1], got ", dropout_p);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const bool drop = training && dropout_p > 0.0;
  Tensor fused;
  if (try_fused_attention(q, k, v, scale, dropout_p, drop, gen, fused)) return fused;
  // Composite: the same function from matmul, softmax and dropout (the CPU's path).
  Tensor probs = softmax(matmul(mul(q, scale), k.transpose(-1, -2)), -1);
  if (drop) probs = dropout(probs, dropout_p, true, gen ? *gen : default_generator());
  return matmul(probs, v);
}

Tensor packed_attention(const Tensor& qkv_in, int64_t heads, double dropout_p, bool training,
                        Generator* gen) {
  const Tensor qkv = autocast_lower(qkv_in);
  FG_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, "packed_attention: qkv must be (B, L, 3E), got ",
           shape_str(qkv.shape()));
  const int64_t b = qkv.size(0), l = qkv.size(1), e = qkv.size(2) / 3;
  FG_CHECK(heads > 0 && e % heads == 0, "packed_attention: width ", e,
           " is not divisible by the number of heads ", heads);
  const int64_t head_dim = e / heads;
  FG_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0,
           "packed_attention: dropout probability must be in [0, 1], got ", dropout_p);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const bool drop = training && dropout_p > 0.0;
  AttentionShape shape;
  shape.dtype = qkv.dtype();
  shape.batch = b;
  shape.heads = heads;
  shape.q_len = l;
  shape.kv_len = l;
  shape.head_dim = head_dim;
  shape.dropout = drop;
  if (b == 0 || l == 0 || (drop && dropout_p >= 1.0) || !backend_of(qkv).supports_attention(shape)) {
    // Composite: the same function from the parts.
    const Tensor context = scaled_dot_product_attention(
        packed_part(qkv, 0, heads), packed_part(qkv, 1, heads), packed_part(qkv, 2, heads),
        dropout_p, training, gen);
    return context.transpose(1, 2).reshape({b, l, e});
  }
  Tensor parts[3];
  {
    NoGradGuard no_grad;  // views of qkv (copies only where its layout needs them)
    for (int64_t i = 0; i < 3; ++i) parts[i] = attention_view(packed_part(qkv, i, heads));
  }
  const AttentionForwardArgs saved =
      fused_attention_forward(shape, parts[0], parts[1], parts[2], scale, dropout_p, gen);
  // (B, H, L, D) stored heads last is (B, L, H, D): the merged (B, L, E) without a copy,
  // in a tensor of its own (a view), so the node's saved copy does not point back at it.
  const Tensor out = saved.out.transpose(1, 2).reshape({b, l, e});
  return record("packed_attention", out, {qkv}, [saved, heads](const Tensor& g, InputGrads& grads) {
    const AttentionShape& s = saved.shape;
    const int64_t width = s.heads * s.head_dim;
    const Tensor grad = Tensor::empty({s.batch, s.q_len, 3 * width}, s.dtype, saved.q.device());
    const Tensor g4 = g.to(s.dtype).reshape({s.batch, s.q_len, s.heads, s.head_dim}).transpose(1, 2);
    Tensor parts[3];
    for (int64_t i = 0; i < 3; ++i) {
      parts[i] = packed_part(grad, i, heads);
      FG_ASSERT(parts[i].storage() == grad.storage());  // views, written in place
    }
    fused_attention_backward(saved, attention_view(g4), parts[0], parts[1], parts[2]);
    grads.set(0, grad);
  });
}

}  // namespace fg
