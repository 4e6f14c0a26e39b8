// NCCL collectives for CUDA tensors, one GPU per process. The unique id is
// shared through the host channel (MPI, or the TCP rendezvous), which also
// carries host values and barriers. Collectives run on their own stream:
// the communication stream waits for an event recorded on the compute stream
// (the tensors are ready), and the compute stream waits for the collective's
// event before it touches the results, so the host never blocks.
//
// A collective that never completes (a peer died inside NCCL) would stall the
// GPU forever; a watchdog thread aborts the communicator and ends the process
// when one has not completed within FGMOE_DIST_TIMEOUT.
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/cuda_support.h"
#include "train/comm_backends.h"

namespace fg::train {

namespace {

using Clock = std::chrono::steady_clock;

#define FG_NCCL_CHECK(expr)                                                                  \
  do {                                                                                       \
    const ncclResult_t fg_nccl_status = (expr);                                              \
    FG_CHECK(fg_nccl_status == ncclSuccess, "NCCL error in ", #expr, ": ",                   \
             ncclGetErrorString(fg_nccl_status), " (NCCL_DEBUG=WARN in the environment tells more)"); \
  } while (0)

#define FG_CUDART_CHECK(expr)                                                                \
  do {                                                                                       \
    const cudaError_t fg_cudart_status = (expr);                                             \
    FG_CHECK(fg_cudart_status == cudaSuccess, "CUDA error in ", #expr, ": ",                 \
             cudaGetErrorString(fg_cudart_status));                                          \
  } while (0)

ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::Float32: return ncclFloat32;
    case DType::Float64: return ncclFloat64;
    case DType::BFloat16: return ncclBfloat16;
    case DType::Float16: return ncclFloat16;
    default: FG_CHECK(false, "NCCL collectives: unsupported dtype ", dtype_name(d));
  }
  return ncclFloat32;
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<HostChannel> host, int device)
      : host_(std::move(host)), device_(device), timeout_(dist_timeout_seconds()) {
    cuda_set_device(device_);
    compute_ = static_cast<cudaStream_t>(cuda_stream());  // creates the context on device_
    FG_CHECK(compute_ != nullptr, "NCCL communicator: no CUDA device");
    FG_CUDART_CHECK(cudaSetDevice(device_));
    FG_CUDART_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
    ncclUniqueId id{};
    if (host_->rank() == 0) FG_NCCL_CHECK(ncclGetUniqueId(&id));
    host_->broadcast_host(&id, sizeof(id), 0);
    FG_NCCL_CHECK(ncclCommInitRank(&comm_, host_->world_size(), id, host_->rank()));
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    if (watchdog_.joinable()) watchdog_.join();
    // A clean shutdown needs the last collectives done; a rank that died would
    // leave them waiting forever, so the wait is bounded by the same timeout.
    if (std::uncaught_exceptions() == 0 && comm_stream_drained()) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);  // the others may never join a clean shutdown
    }
    for (auto& w : watched_) cudaEventDestroy(w.event);
    for (cudaEvent_t e : pending_) cudaEventDestroy(e);
    cudaStreamDestroy(comm_stream_);
  }

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  int local_rank() const override { return host_->local_rank(); }
  std::string backend_name() const override {
    return "NCCL " + std::to_string(NCCL_MAJOR) + "." + std::to_string(NCCL_MINOR) + " on cuda:" +
           std::to_string(device_) + " (rendezvous: " + host_->backend_name() + ")";
  }

  void all_reduce_sum(const std::vector<Tensor>& tensors) override {
    std::vector<Tensor> on_gpu;
    for (const Tensor& t : tensors) {
      if (t.device().is_cuda()) on_gpu.push_back(t);
      else host_->all_reduce_sum(std::vector<Tensor>{t});
    }
    if (on_gpu.empty()) return;
    // Checked before the group opens: a throw inside it would leave it open and
    // every later collective queued in it, never launched.
    std::vector<ncclDataType_t> types;
    for (const Tensor& t : on_gpu) {
      check_dense(t, "all_reduce_sum");
      types.push_back(nccl_type(t.dtype()));
    }
    const cudaEvent_t done = enqueue([&] {
      FG_NCCL_CHECK(ncclGroupStart());
      for (size_t i = 0; i < on_gpu.size(); ++i) {
        const Tensor& t = on_gpu[i];
        FG_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), types[i], ncclSum,
                                    comm_, comm_stream_));
      }
      FG_NCCL_CHECK(ncclGroupEnd());
    });
    FG_CUDART_CHECK(cudaStreamWaitEvent(compute_, done, 0));
    watch_event(done);
  }

  void broadcast(const std::vector<Tensor>& tensors, int root) override {
    std::vector<Tensor> on_gpu;
    for (const Tensor& t : tensors) {
      if (t.device().is_cuda()) on_gpu.push_back(t);
      else host_->broadcast(std::vector<Tensor>{t}, root);
    }
    if (on_gpu.empty()) return;
    for (const Tensor& t : on_gpu) check_dense(t, "broadcast");  // before the group opens
    const cudaEvent_t done = enqueue([&] {
      FG_NCCL_CHECK(ncclGroupStart());
      for (const Tensor& t : on_gpu) {
        FG_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(),
                                    ncclUint8, root, comm_, comm_stream_));
      }
      FG_NCCL_CHECK(ncclGroupEnd());
    });
    FG_CUDART_CHECK(cudaStreamWaitEvent(compute_, done, 0));
    watch_event(done);
  }

  std::vector<double> all_reduce_sum(std::vector<double> values) override {
    return host_->all_reduce_sum(std::move(values));
  }
  void barrier() override { host_->barrier(); }

  void all_reduce_sum_start(const Tensor& t) override {
    if (!t.device().is_cuda()) {
      host_->all_reduce_sum(std::vector<Tensor>{t});
      return;
    }
    check_dense(t, "all_reduce_sum_start");
    const ncclDataType_t type = nccl_type(t.dtype());
    pending_.push_back(enqueue([&] {
      FG_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()), type,
                                  ncclSum, comm_, comm_stream_));
    }));
  }

  void wait_pending() override {
    for (cudaEvent_t e : pending_) {
      FG_CUDART_CHECK(cudaStreamWaitEvent(compute_, e, 0));
      watch_event(e);
    }
    pending_.clear();
  }

  bool overlaps_compute() const override { return true; }

 private:
  struct Watched {
    cudaEvent_t event;
    Clock::time_point deadline;
  };

  // Now plus the communicator's timeout (FGMOE_DIST_TIMEOUT).
  Clock::time_point timeout_from_now() const {
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_));
  }

  bool comm_stream_drained() const {
    const Clock::time_point until = timeout_from_now();
    for (;;) {
      const cudaError_t status = cudaStreamQuery(comm_stream_);
      if (status == cudaSuccess) return true;
      if (status != cudaErrorNotReady || Clock::now() > until) {
        std::fprintf(stderr, "fgmoe-train: warning: rank %d: %s; aborting the NCCL communicator\n", rank(),
                     status == cudaErrorNotReady ? "the last collectives did not complete in time"
                                                 : cudaGetErrorString(status));
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  static void check_dense(const Tensor& t, const char* what) {
    FG_CHECK(t.is_contiguous(), "NCCL ", what, ": the tensor must be contiguous");
  }

  // Runs `launch` on the communication stream once the compute stream's work so
  // far is done; returns an event recorded after it.
  template <class F>
  cudaEvent_t enqueue(F&& launch) {
    cudaEvent_t ready = nullptr, done = nullptr;
    FG_CUDART_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    FG_CUDART_CHECK(cudaEventRecord(ready, compute_));
    FG_CUDART_CHECK(cudaStreamWaitEvent(comm_stream_, ready, 0));
    FG_CUDART_CHECK(cudaEventDestroy(ready));  // released once it has fired
    launch();
    FG_CUDART_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    FG_CUDART_CHECK(cudaEventRecord(done, comm_stream_));
    return done;
  }

  // The watchdog owns the event from here on and destroys it once it has fired.
  void watch_event(cudaEvent_t e) {
    const Clock::time_point until = timeout_from_now();
    std::lock_guard<std::mutex> lock(mutex_);
    watched_.push_back({e, until});
  }

  [[noreturn]] void fail(const std::string& why) {
    std::fprintf(stderr, "fgmoe-train: error: rank %d: %s; aborting the NCCL communicator\n", rank(), why.c_str());
    std::fflush(stderr);
    ncclCommAbort(comm_);
    std::_Exit(1);
  }

  void watch() {
    cudaSetDevice(device_);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_) return;
        while (!watched_.empty()) {
          const cudaError_t status = cudaEventQuery(watched_.front().event);
          if (status == cudaSuccess) {
            cudaEventDestroy(watched_.front().event);
            watched_.pop_front();
          } else if (status == cudaErrorNotReady) {
            if (Clock::now() > watched_.front().deadline)
              fail("a collective did not complete within " + std::to_string(timeout_) +
                   " s (FGMOE_DIST_TIMEOUT); another rank has probably died or stalled");
            break;
          } else {
            fail(std::string("CUDA error while waiting for a collective: ") + cudaGetErrorString(status));
          }
        }
        ncclResult_t async = ncclSuccess;
        if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress)
          fail(std::string("NCCL reported an asynchronous error: ") + ncclGetErrorString(async));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::unique_ptr<HostChannel> host_;
  int device_;
  double timeout_;
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  std::vector<cudaEvent_t> pending_;  // started bucket sums, not yet waited for

  std::mutex mutex_;
  std::deque<Watched> watched_;
  bool stop_ = false;
  std::thread watchdog_;
};

}  // namespace

bool nccl_compiled() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<HostChannel> host, int device) {
  return std::make_unique<NcclCommunicator>(std::move(host), device);
}

}  // namespace fg::train
