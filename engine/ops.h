// The engine's ops. Each has a forward per device (through the Backend) and a
// backward rule written with these same ops. Unless noted, ops are
// differentiable with respect to every floating tensor argument.
#pragma once

#include <optional>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/random.h"
#include "engine/tensor.h"

namespace fg {

// ---------------- elementwise arithmetic, NumPy broadcasting ----------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // gradient to the larger (a on ties)
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
Tensor rsub(double a, const Tensor& b);  // a - b
Tensor pow(const Tensor& a, double exponent);

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact (erf) form, PyTorch's default
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator+(double a, const Tensor& b) { return add(b, a); }
inline Tensor operator-(double a, const Tensor& b) { return rsub(a, b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator-(const Tensor& x) { return neg(x); }

// ---------------- comparisons and selection (no gradient through cond/mask) ----------------
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);
// cond ? a : b, broadcasting all three; differentiable in a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor where(const Tensor& cond, const Tensor& a, double b);
// x with value wherever mask is true; differentiable in x.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// ---------------- reductions ----------------
Tensor sum(const Tensor& x);  // all elements -> 0-d
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// Maximum values over dims; the gradient is shared equally among tied maxima.
Tensor max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor max(const Tensor& x);
// Index of the maximum along dim (no gradient), Int64.
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
// Reduces a broadcast gradient back to shape (sum over broadcast dimensions).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---------------- linear algebra ----------------
// Matrix product over the last two dimensions, broadcasting the batch dimensions.
// Transposed operands (x.transpose(-1, -2)) are handed to BLAS without a copy.
Tensor matmul(const Tensor& a, const Tensor& b);
// x W^T + b with W (out, in), as torch.nn.functional.linear; bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---------------- normalization and losses ----------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// Jointly over several adjacent dimensions (e.g. {2, 3} of (b, m, n, p)).
Tensor softmax(const Tensor& x, const std::vector<int64_t>& dims);
Tensor log_softmax(const Tensor& x, const std::vector<int64_t>& dims);
// Normalizes over the last normalized_ndim dimensions; weight/bias may be undefined.
Tensor layer_norm(const Tensor& x, int64_t normalized_ndim, const Tensor& weight,
                  const Tensor& bias, double eps = 1e-5);
// Inverted dropout: zero with probability p, scale the rest by 1/(1-p). Identity unless training.
// One draw from gen (nothing for an empty tensor); no mask is kept: the backward
// draws the same keep decisions again.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);
// dropout(relu(x), p, training, gen) in one pass with the same numbers and the
// same draw; keeps only its output for the backward (the gradient passes where
// the output is positive), which the next layer keeps anyway.
Tensor relu_dropout(const Tensor& x, double p, bool training, Generator& gen);
// layer_norm(residual + dropout(x, p, training, gen)) over the last dimension:
// a post-norm transformer's residual connection, in one pass each way where the
// backend fuses it (the same draw, the same numbers up to the statistics' order
// of summation). residual and x of one shape.
Tensor add_layer_norm(const Tensor& residual, const Tensor& x, const Tensor& weight,
                      const Tensor& bias, double eps, double p, bool training, Generator& gen);
// Mean cross-entropy of logits (N, C) against integer labels (N) with label smoothing.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double label_smoothing = 0.0);
// Mean over rows of -sum(targets * log_softmax(logits)), targets (N, C) (soft labels).
Tensor soft_cross_entropy(const Tensor& logits, const Tensor& targets);
// q, k, v (..., L, D): softmax(q k^T / sqrt(D)) v with dropout on the probabilities.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    double dropout_p = 0.0, bool training = false,
                                    Generator* gen = nullptr);
// Multi-head attention over a packed in-projection: qkv (B, L, 3E) holds q, k and v
// side by side (as the packed in_proj of nn.MultiheadAttention produces), split into
// `heads` heads each. Returns the heads' outputs merged, (B, L, E). The same function
// as chunking qkv and calling scaled_dot_product_attention on the heads (the same
// dropout masks), but with a fused kernel the gradient is written into one (B, L, 3E)
// tensor instead of three slices.
Tensor packed_attention(const Tensor& qkv, int64_t heads, double dropout_p = 0.0,
                        bool training = false, Generator* gen = nullptr);
// The CPU's fused attention kernel (on by default); off makes the CPU use the
// composite matmul-softmax-dropout-matmul path (for tests and comparisons).
void cpu_set_fused_attention(bool on);
bool cpu_fused_attention();

// ---------------- shape ----------------
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim);
// (B, C, H, W) -> (B, (H/p)*(W/p), p*p*C), patches row-major over the grid and
// each patch ordered (row, col, channel) as einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'.
Tensor patchify(const Tensor& images, int64_t patch);
// The inverse of patchify given the image height and width.
Tensor unpatchify(const Tensor& tokens, int64_t patch, int64_t channels, int64_t height,
                  int64_t width);

// ---------------- images (no gradient) ----------------
// (N, C, H, W) -> (N, C, out_h, out_w), torch.nn.functional.interpolate(mode="bicubic").
Tensor bicubic_resize(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners = false);

// ---------------- misc (no gradient) ----------------
// labels (...) integer -> (..., classes) of dtype, 1 at the label.
Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype = DType::Float32);

// ---------------- in place, outside autograd ----------------
// Error if dst requires a gradient while grad mode is on.
void copy_(const Tensor& dst, const Tensor& src);  // broadcasts src, converts dtype
void fill_(const Tensor& dst, double value);
void zero_(const Tensor& dst);
void add_(const Tensor& dst, const Tensor& src, double alpha = 1.0);  // dst += alpha * src
void mul_(const Tensor& dst, double value);
void mul_(const Tensor& dst, const Tensor& src);

// ---------------- test helpers ----------------
// max |a - b|, and whether |a - b| <= atol + rtol |b| everywhere (host copies).
double max_abs_diff(const Tensor& a, const Tensor& b);
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);

}  // namespace fg
