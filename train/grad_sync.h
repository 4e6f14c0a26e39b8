// Data-parallel gradient averaging in buckets. Parameters are grouped, in
// reverse order (the order their gradients become final in the backward pass),
// into buckets of about 25 MB. On a backend that overlaps communication with
// computation (NCCL), a bucket's sum starts from the autograd grad-ready hook
// as soon as its last gradient is final, while the backward pass goes on; on
// the host backends (TCP, MPI) the buckets are summed after the backward.
// Either way finish() leaves every parameter's gradient equal to the mean over
// the ranks (on a GPU: in stream order, before the optimizer's kernels).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "train/distributed.h"

namespace fg::train {

class GradientAverager {
 public:
  static constexpr size_t kDefaultBucketBytes = size_t{25} << 20;

  GradientAverager(Communicator& comm, std::vector<Tensor> params, size_t bucket_bytes = kDefaultBucketBytes);
  ~GradientAverager();
  GradientAverager(const GradientAverager&) = delete;
  GradientAverager& operator=(const GradientAverager&) = delete;

  // Call before the backward pass whose gradients are to be averaged (the last
  // micro-step of an accumulation); arms the grad-ready hook when it pays.
  void before_backward();
  // Call after that backward pass. A parameter without a gradient on some
  // rank counts as a zero gradient there (and gets one), so that every rank
  // takes part in the same sums.
  void finish();

  size_t bucket_count() const { return buckets_.size(); }
  // Parameter indices of bucket b, in launch order.
  const std::vector<size_t>& bucket_params(size_t b) const { return buckets_[b].params; }

 private:
  struct Bucket {
    std::vector<size_t> params;    // indices into params_
    std::vector<int64_t> offsets;  // element offset of each parameter in flat
    int64_t numel = 0;
    DType dtype = DType::Float32;
    Device device = kCPU;
    Tensor flat;  // the bucket's buffer, kept between steps
    size_t ready = 0;
    bool started = false;
  };

  void on_grad_ready(TensorImpl* leaf);
  void start(Bucket& bucket);
  void start_ready_in_order();

  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<Bucket> buckets_;
  std::unordered_map<TensorImpl*, size_t> bucket_of_;  // parameter -> bucket index
  size_t next_to_start_ = 0;
  bool armed_ = false;
};

}  // namespace fg::train
