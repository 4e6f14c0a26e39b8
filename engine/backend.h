// The kernels a device provides. Ops (engine/ops) validate arguments, allocate
// outputs and record autograd; a Backend only computes. The CPU backend always
// exists; the CUDA backend registers itself when compiled in.
//
// Conventions: every tensor handed to a kernel lives on the backend's device.
// Elementwise kernels take operands already broadcast to out's shape (strided
// views, stride 0 on broadcast dimensions) and may write a strided out; the
// other kernels take contiguous tensors unless stated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace fg {

enum class UnaryOp : uint8_t {
  Neg,
  Exp,
  Log,
  Sqrt,
  Rsqrt,
  Relu,
  Gelu,
  Tanh,
  Sigmoid,
  Abs,
  Reciprocal,
  Square,
  LogicalNot
};

enum class BinaryOp : uint8_t {
  Add,
  Sub,
  Mul,
  Div,
  Maximum,
  Minimum,
  Pow,
  Eq,
  Ne,
  Lt,
  Le,
  Gt,
  Ge,
  LogicalAnd,
  LogicalOr,     // Bool output
  ReluBackward,  // (grad, relu output) -> grad where output > 0
  GeluBackward,  // (grad, input) -> grad * gelu'(input), erf form
};
bool is_comparison(BinaryOp op);

enum class ReduceOp : uint8_t { Sum, Max, Min };

// Row-major (batched) GEMM: C[i] = alpha * op(A[i]) op(B[i]) + beta * C[i] (+ bias
// along the n dimension, then ReLU when asked). op(X) is X or its transpose.
// A is m x k after op, B is k x n after op; ld* are row strides in elements.
struct GemmArgs {
  DType dtype = DType::Float32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  double alpha = 1.0, beta = 0.0;
  const void* bias = nullptr;  // n values, added to every row of C
  bool relu = false;
};

// Fused scaled dot-product attention, per (batch, head):
//   out = dropout(softmax(scale * q k^T)) v
// q (B, H, Lq, D), k and v (B, H, Lk, D), out (B, H, Lq, D): views with unit
// stride along D and any other strides (3-D inputs come as H = 1). Dropout draws
// element ((b * H + h) * Lq + i) * Lk + j of the probabilities' mask from
// (seed, offset) exactly as dropout_mask would for a contiguous (B, H, Lq, Lk)
// tensor, so the fused and the composite paths drop the same entries.
struct AttentionShape {
  DType dtype = DType::Float32;
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
  bool dropout = false;
};

struct AttentionForwardArgs {
  AttentionShape shape;
  Tensor q, k, v, out;
  Tensor logsumexp;  // (B * H * Lq) float32 (float64 for float64 inputs), written for the backward
  double scale = 1.0, dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
  const uint64_t* offset_base = nullptr;  // Generator::offset_base at the draw
};

struct AttentionBackwardArgs {
  AttentionShape shape;
  Tensor q, k, v, out, grad_out, logsumexp;  // as in and from the forward
  Tensor grad_q, grad_k, grad_v;             // written, shaped as q, k, v
  double scale = 1.0, dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
  const uint64_t* offset_base = nullptr;  // Generator::offset_base at the draw
};

// One dropout draw: probability p in (0, 1) of dropping, the generator state it
// was drawn from, and whether a ReLU comes first (relu_dropout).
struct DropoutArgs {
  double p = 0.0;  // 0: nothing dropped
  uint64_t seed = 0, offset = 0;
  bool relu = false;
  // Inside a captured CUDA graph: where the replay's shift of the offset lives
  // (Generator::offset_base at the draw; philox_offset_at). Null otherwise.
  const uint64_t* offset_base = nullptr;
  // What kept values are multiplied by, 1 / (1 - p), in the type T they are computed in.
  template <class T>
  T scale() const {
    return static_cast<T>(1.0 / (1.0 - p));
  }
};

// grad_residual = layer_norm's input gradient (sum's dtype); grad_x = that
// gradient rounded to x's dtype, then through dropout's backward. Any of the
// four gradients may be undefined (not needed).
struct AddLayerNormBackwardArgs {
  Tensor grad, sum, mean, rstd, weight;
  DropoutArgs dropout;
  int64_t rows = 0, cols = 0;
  Tensor grad_residual, grad_x, grad_weight, grad_bias;
};

// sum = residual + dropout(x) (x's dropout product rounded to x's dtype, then
// added in sum's), out = layer_norm(sum) over the last `cols` values of each of
// `rows` rows; sum, mean and rstd are kept for the backward. residual, sum and
// out share one dtype (float32 or float64); x has it too, or is bfloat16 with
// float32 (autocast: a bfloat16 branch onto the float32 residual stream).
// All contiguous; weight/bias as layer_norm's (may be undefined).
struct AddLayerNormArgs {
  Tensor residual, x, weight, bias;
  DropoutArgs dropout;
  double eps = 1e-5;
  int64_t rows = 0, cols = 0;
  Tensor out, sum, mean, rstd;
  // The backward's arguments, less the incoming gradient and the gradients out.
  AddLayerNormBackwardArgs backward() const {
    AddLayerNormBackwardArgs b;
    b.sum = sum;
    b.mean = mean;
    b.rstd = rstd;
    b.weight = weight;
    b.dropout = dropout;
    b.rows = rows;
    b.cols = cols;
    return b;
  }
};

struct AdamWParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  int64_t step = 1;  // 1-based, after increment
  // Inside a captured CUDA graph: a float64 device tensor of 6 values (lr,
  // beta1, beta2, eps, weight_decay, step) the update reads instead of the
  // fields above, written before each replay. Undefined otherwise; backends
  // that never capture ignore it.
  Tensor device_scalars;
  // Optional: one float32 or float64 value on the parameters' device that
  // multiplies every gradient as the update reads it (rounded to the
  // parameters' dtype), read where it lives: gradient clipping's coefficient
  // applied without a pass of its own over the gradients, which stay as they
  // were. Undefined: 1.
  Tensor grad_scale;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // ---- memory ----
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual void copy_from_host(void* dst, const void* src, size_t nbytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t nbytes) = 0;
  // Waits for queued work on this device (no-op on the CPU).
  virtual void synchronize() {}
  // Bytes held by live tensors on this device (as rounded by the allocator), and
  // the most held at once since start or the last reset_peak().
  virtual size_t allocated_bytes() const { return 0; }
  virtual size_t peak_bytes() const { return 0; }
  virtual void reset_peak() {}

  // ---- elementwise (see conventions above) ----
  // dst = src with dtype conversion; src and dst have the same shape.
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  virtual void fill(const Tensor& dst, double value) = 0;
  virtual void unary(UnaryOp op, const Tensor& x, const Tensor& out) = 0;
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out = cond ? a : b  (cond is Bool)
  virtual void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- reductions ----
  // x contiguous, viewed as (outer, reduce, inner); out contiguous (outer, inner).
  virtual void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t reduce, int64_t inner,
                      const Tensor& out) = 0;

  // ---- linear algebra ----
  virtual void gemm(const GemmArgs& args) = 0;

  // ---- normalization ----
  // x and out contiguous, viewed as (outer, n, inner): softmax over n.
  virtual void softmax(const Tensor& x, const Tensor& out, int64_t outer, int64_t n,
                       int64_t inner, bool log) = 0;
  // Given y = softmax(x) (or log_softmax) and dL/dy, writes dL/dx.
  virtual void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& grad_input,
                                int64_t outer, int64_t n, int64_t inner, bool log) = 0;
  // x (rows, cols); weight/bias (cols) or undefined; mean/rstd (rows) in the statistics dtype.
  virtual void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                          int64_t rows, int64_t cols, const Tensor& out, const Tensor& mean,
                          const Tensor& rstd) = 0;
  // grad_weight / grad_bias may be undefined (not needed).
  virtual void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& weight, int64_t rows,
                                   int64_t cols, const Tensor& grad_input,
                                   const Tensor& grad_weight, const Tensor& grad_bias) = 0;

  // ---- randomness (counter-based: element i of a draw depends only on seed, offset, i) ----
  virtual void uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low,
                       double high) = 0;
  virtual void normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean,
                      double std) = 0;
  // mask[i] = (uniform_i >= p) / (1 - p), in mask's dtype.
  virtual void dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t offset) = 0;
  // Dropout without a mask tensor: out[i] = keep_i ? x[i] * s : 0 with keep_i =
  // (uniform_i >= p), the draw of dropout_mask, and s = 1 / (1 - p), multiplied in
  // float (double for double) and rounded once. With args.relu, x[i] is first
  // max(x[i], 0). x and out contiguous, of one dtype and shape.
  virtual void dropout(const Tensor& x, const Tensor& out, const DropoutArgs& args) = 0;
  // The backward: grad_input[i] = grad[i] * (keep_i ? s : 0), keep_i drawn again
  // from (seed, offset); with args.relu, keep_i = (out[i] > 0) read from the
  // forward's output (kept and positive before the scale), and `out` must be given.
  virtual void dropout_backward(const Tensor& grad, const Tensor& out, const Tensor& grad_input,
                                const DropoutArgs& args) = 0;

  // ---- images ----
  // x (N, C, H, W) contiguous float -> out (N, C, OH, OW): PyTorch bicubic (a = -0.75).
  virtual void bicubic_resize(const Tensor& x, const Tensor& out, bool align_corners) = 0;

  // ---- optimizer ----
  // One AdamW step (PyTorch's formulation) over each (param, grad, exp_avg, exp_avg_sq).
  virtual void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                     const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
                     const AdamWParams& hyper) = 0;

  // Sum of the squares of every element of x (contiguous) into the one-element out
  // of x's dtype (the gradient norm). Default: square, then sum, through this
  // backend's own operations; a backend may fuse the two.
  virtual void sum_squares(const Tensor& x, const Tensor& out);
  // Gradient clipping over many tensors (contiguous float32, on this device):
  // out (one float32 value) = the sum of every element's square, and x *= the
  // one-element float32 `factor` for every x, read where it lives. Defaults:
  // sum_squares per tensor added up in order, and a multiply per tensor; a
  // backend may cover all the tensors in a few launches.
  virtual void sum_squares_many(const std::vector<Tensor>& xs, const Tensor& out);
  virtual void scale_many(const std::vector<Tensor>& xs, const Tensor& factor);

  // A residual connection with dropout and the layer norm after it (post-norm
  // transformers), as AddLayerNormArgs describes. Default: dropout, add and
  // layer_norm through this backend's own operations; a backend may fuse them.
  virtual void add_layer_norm(const AddLayerNormArgs& args);
  virtual void add_layer_norm_backward(const AddLayerNormBackwardArgs& args);

  // ---- optional fused kernels (ops fall back to composites when unsupported) ----
  virtual bool supports_attention(const AttentionShape& shape) const {
    (void)shape;
    return false;
  }
  virtual void attention(const AttentionForwardArgs& args);
  virtual void attention_backward(const AttentionBackwardArgs& args);
};

Backend& backend_for(Device device);
inline Backend& backend_of(const Tensor& t) { return backend_for(t.device()); }
// Called by a device's backend at start-up.
void register_backend(DeviceType type, Backend* backend);

}  // namespace fg
