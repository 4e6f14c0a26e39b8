// The CUDA backend: registers itself on first use when a GPU is present and
// forwards every Backend operation to its kernels (engine/cuda/kernels.h).
// Everything is queued on one stream; only the copies to the host wait.
#include "engine/backend.h"

#include <cuda_runtime.h>

#include <mutex>

#include "engine/cuda/context.h"
#include "engine/cuda_graph.h"
#include "engine/cuda/kernels.h"
#include "engine/cuda_support.h"

namespace fg {

namespace {

int query_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the "no driver" / "no device" error
    return 0;
  }
  return count;
}

class CudaBackend final : public Backend {
 public:
  Device device() const override { return kCUDA; }

  void* allocate(size_t nbytes) override { return cuda::cached_malloc(nbytes); }
  void deallocate(void* ptr, size_t nbytes) override { cuda::cached_free(ptr, nbytes); }

  // The caller may reuse src as soon as this returns, so the copy is waited for.
  void copy_from_host(void* dst, const void* src, size_t nbytes) override {
    FG_CHECK(!cuda_graph_capturing(), "an upload from host memory inside a CUDA graph capture (the "
             "graph would copy from that address at every replay, long after it is gone): "
             "create the tensor before the captured step");
    FG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, cuda::stream()));
    note_host_wait();  // the caller may reuse src at once
    FG_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  }
  void copy_to_host(void* dst, const void* src, size_t nbytes) override {
    FG_CHECK(!cuda_graph_capturing(), "reading a CUDA tensor on the host inside a CUDA graph capture "
             "(nothing has run yet): read it after a replay");
    FG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, cuda::stream()));
    note_host_wait();
    FG_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  }
  void synchronize() override {
    FG_CHECK(!cuda_graph_capturing(), "synchronize: not allowed inside a CUDA graph capture");
    FG_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  }
  size_t allocated_bytes() const override { return cuda_memory_stats().allocated; }
  size_t peak_bytes() const override { return cuda_memory_stats().peak_allocated; }
  void reset_peak() override { cuda_reset_peak_memory(); }

  void copy(const Tensor& src, const Tensor& dst) override { cuda::copy(src, dst); }
  void fill(const Tensor& dst, double value) override { cuda::fill(dst, value); }
  void unary(UnaryOp op, const Tensor& x, const Tensor& out) override { cuda::unary(op, x, out); }
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override {
    cuda::binary(op, a, b, out);
  }
  void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) override {
    cuda::where(cond, a, b, out);
  }
  void reduce(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner,
              const Tensor& out) override {
    cuda::reduce(op, x, outer, r, inner, out);
  }
  void gemm(const GemmArgs& args) override { cuda::gemm(args); }
  void softmax(const Tensor& x, const Tensor& out, int64_t outer, int64_t n, int64_t inner,
               bool log) override {
    cuda::softmax(x, out, outer, n, inner, log);
  }
  void softmax_backward(const Tensor& y, const Tensor& grad, const Tensor& grad_input,
                        int64_t outer, int64_t n, int64_t inner, bool log) override {
    cuda::softmax_backward(y, grad, grad_input, outer, n, inner, log);
  }
  void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                  int64_t rows, int64_t cols, const Tensor& out, const Tensor& mean,
                  const Tensor& rstd) override {
    cuda::layer_norm(x, weight, bias, eps, rows, cols, out, mean, rstd);
  }
  void layer_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& mean,
                           const Tensor& rstd, const Tensor& weight, int64_t rows, int64_t cols,
                           const Tensor& grad_input, const Tensor& grad_weight,
                           const Tensor& grad_bias) override {
    cuda::layer_norm_backward(grad, x, mean, rstd, weight, rows, cols, grad_input, grad_weight,
                              grad_bias);
  }
  void uniform(const Tensor& out, uint64_t seed, uint64_t offset, double low,
               double high) override {
    cuda::uniform(out, seed, offset, low, high);
  }
  void normal(const Tensor& out, uint64_t seed, uint64_t offset, double mean, double std) override {
    cuda::normal(out, seed, offset, mean, std);
  }
  void dropout_mask(const Tensor& mask, double p, uint64_t seed, uint64_t offset) override {
    cuda::dropout_mask(mask, p, seed, offset);
  }
  void sum_squares_many(const std::vector<Tensor>& xs, const Tensor& out) override {
    cuda::sum_squares_many(xs, out);
  }
  void scale_many(const std::vector<Tensor>& xs, const Tensor& factor) override {
    cuda::scale_many(xs, factor);
  }
  void add_layer_norm(const AddLayerNormArgs& args) override { cuda::add_layer_norm(args); }
  void add_layer_norm_backward(const AddLayerNormBackwardArgs& args) override {
    cuda::add_layer_norm_backward(args);
  }
  void dropout(const Tensor& x, const Tensor& out, const DropoutArgs& args) override {
    cuda::dropout(x, out, args);
  }
  void dropout_backward(const Tensor& grad, const Tensor& out, const Tensor& grad_input,
                        const DropoutArgs& args) override {
    cuda::dropout_backward(grad, out, grad_input, args);
  }
  void bicubic_resize(const Tensor& x, const Tensor& out, bool align_corners) override {
    cuda::bicubic_resize(x, out, align_corners);
  }
  void adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
             const std::vector<Tensor>& exp_avgs, const std::vector<Tensor>& exp_avg_sqs,
             const AdamWParams& hyper) override {
    cuda::adamw(params, grads, exp_avgs, exp_avg_sqs, hyper);
  }
  bool supports_attention(const AttentionShape& shape) const override {
    return cuda::fused_attention_enabled() && cuda::attention_supported(shape);
  }
  void attention(const AttentionForwardArgs& args) override { cuda::attention(args); }
  void attention_backward(const AttentionBackwardArgs& args) override {
    cuda::attention_backward(args);
  }
};

}  // namespace

bool cuda_compiled() { return true; }

int cuda_device_count() {
  static const int count = query_device_count();
  return count;
}

bool cuda_available() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (cuda_device_count() > 0) register_backend(DeviceType::CUDA, new CudaBackend());
  });
  return cuda_device_count() > 0;
}

}  // namespace fg
