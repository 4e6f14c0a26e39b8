// The tensor collectives of the host channels, built on their byte-level ones,
// and the stand-ins for backends this build lacks.
#include <cstdlib>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "train/comm_backends.h"

namespace fg::train {

double dist_timeout_seconds() {
  const char* v = std::getenv("FGMOE_DIST_TIMEOUT");
  if (!v || !*v) return 300.0;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  FG_CHECK(end && *end == '\0' && s > 0, "FGMOE_DIST_TIMEOUT must be a positive number of seconds, got '", v, "'");
  return s;
}

namespace {
bool host_summable(DType d) { return d == DType::Float32 || d == DType::Float64; }
}  // namespace

void HostChannel::all_reduce_sum(const std::vector<Tensor>& tensors) {
  NoGradGuard no_grad;
  for (const Tensor& t : tensors) {
    FG_CHECK(t.defined(), "all_reduce_sum: undefined tensor");
    if (t.device().is_cpu() && t.is_contiguous() && host_summable(t.dtype())) {
      reduce_sum_host(t.data_ptr(), t.numel(), t.dtype());
      continue;
    }
    // Device memory or a narrow type: sum a float copy on the host, then write it back.
    Tensor work = t.to(kCPU);
    work = host_summable(work.dtype()) ? work.contiguous().clone() : work.to(DType::Float32).contiguous();
    reduce_sum_host(work.data_ptr(), work.numel(), work.dtype());
    copy_(t, work.to(t.device()));
  }
}

void HostChannel::broadcast(const std::vector<Tensor>& tensors, int root) {
  NoGradGuard no_grad;
  for (const Tensor& t : tensors) {
    FG_CHECK(t.defined(), "broadcast: undefined tensor");
    const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
    if (t.device().is_cpu() && t.is_contiguous()) {
      broadcast_host(t.data_ptr(), nbytes, root);
      continue;
    }
    Tensor work = t.to(kCPU).contiguous().clone();
    broadcast_host(work.data_ptr(), nbytes, root);
    copy_(t, work.to(t.device()));
  }
}

std::vector<double> HostChannel::all_reduce_sum(std::vector<double> values) {
  if (!values.empty()) reduce_sum_host(values.data(), static_cast<int64_t>(values.size()), DType::Float64);
  return values;
}

#ifndef FGMOE_WITH_MPI
bool mpi_compiled() { return false; }
std::unique_ptr<HostChannel> make_mpi_channel() {
  FG_CHECK(false, "this process was started by mpirun with several processes, but fgmoe-train was built "
                  "without MPI (install libopenmpi-dev and rebuild); or launch with "
                  "fgmoe-train --nproc-per-node N, or torchrun");
  return nullptr;
}
#endif

#ifndef FGMOE_WITH_NCCL
bool nccl_compiled() { return false; }
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<HostChannel> host, int device) {
  (void)host;
  (void)device;
  FG_CHECK(false, "fgmoe was built without NCCL");
  return nullptr;
}
#endif

}  // namespace fg::train
