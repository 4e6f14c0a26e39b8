// The CPU backend: BLAS for GEMMs, OpenMP loops elsewhere.
#pragma once

#include "engine/backend.h"

namespace fg::cpu {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return kCPU; }
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  void copy_from_host(void* dst, const void* src, size_t nbytes) override;
  void copy_to_host(void* dst, const void* src, size_t nbytes) override;
  size_t allocated_bytes() const override;
  size_t peak_bytes() const override;
  void reset_peak() override;

  void copy(const Tensor& src, const Tensor& dst) override;
  void fill(const Tensor& dst, double value) override;
  void unary(UnaryOp op, const Tensor& x, const Tensor& out) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t reduce, int64_t inner,
              const Tensor& out) override;
  void gemm(const GemmArgs& args) override;
  void softmax(const Tensor& x, const Tensor& out, int64_t outer, int64_t n, int64_t inner,
               bool log) override;
  void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& grad_input,
                        int64_t outer, int64_t n, int64_t inner, bool log) override;
  void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                  int64_t rows, int64_t cols, const Tensor& out, const Tensor& mean,
                  const Tensor& rstd) override;
  void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                           const Tensor& rstd, const Tensor& weight, int64_t rows, int64_t cols,
                           const Tensor& grad_input, const Tensor& grad_weight,
                           const Tensor& grad_bias) override;
  void uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low,
               double high) override;
  void normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean,
              double std) override;
  void dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t offset) override;
  void dropout(const Tensor& x, const Tensor& out, const DropoutArgs& args) override;
  void dropout_backward(const Tensor& grad, const Tensor& out, const Tensor& grad_input,
                        const DropoutArgs& args) override;
  void bicubic_resize(const Tensor& x, const Tensor& out, bool align_corners) override;
  void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
             const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
             const AdamWParams& hyper) override;
  void sum_squares(const Tensor& x, const Tensor& out) override;
  void sum_squares_many(const std::vector<Tensor>& xs, const Tensor& out) override;
  void scale_many(const std::vector<Tensor>& xs, const Tensor& factor) override;
  bool supports_attention(const AttentionShape& shape) const override;
  void attention(const AttentionForwardArgs& args) override;
  void attention_backward(const AttentionBackwardArgs& args) override;
};

// Large blocks (over 64 KiB) the CPU allocator has taken from the system so far:
// flat once a repeating step has warmed the cache up.
size_t system_allocations();
// Bytes currently held by the CPU allocator's cache (for tests and diagnostics).
size_t cached_bytes();
// Returns cached blocks to the system.
void release_cached_memory();

}  // namespace fg::cpu
