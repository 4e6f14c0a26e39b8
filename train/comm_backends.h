// The multi-process communicators behind make_communicator (train/launcher.h).
// Host channels (TCP sockets, MPI) move bytes between processes through host
// memory; they carry every collective on the CPU, and for GPU training the
// metrics, barriers and the NCCL rendezvous beside NCCL.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/distributed.h"

namespace fg::train {

// Seconds a rank waits for its peers (rendezvous, and any one wait inside a
// collective) before giving up: FGMOE_DIST_TIMEOUT, default 300.
double dist_timeout_seconds();

class HostChannel : public Communicator {
 public:
  void all_reduce_sum(const std::vector<Tensor>& tensors) override;
  void broadcast(const std::vector<Tensor>& tensors, int root) override;
  std::vector<double> all_reduce_sum(std::vector<double> values) override;

  // The byte-level collectives the tensor ones are built on. data is host memory.
  // Sums n elements of dtype (Float32 or Float64); all ranks get identical bits.
  virtual void reduce_sum_host(void* data, int64_t n, DType dtype) = 0;
  virtual void broadcast_host(void* data, size_t nbytes, int root) = 0;
};

// Where this process sits in a torchrun-style launch.
struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;
  int master_port = 0;
};

// Rank 0 listens on master_port, the others connect to master_addr:master_port.
std::unique_ptr<HostChannel> make_tcp_channel(const LaunchEnv& env);

// MPI_COMM_WORLD (launched by mpirun). Only when fgmoe was built with MPI.
bool mpi_compiled();
std::unique_ptr<HostChannel> make_mpi_channel();

// NCCL for CUDA tensors on GPU `device`; host values and barriers go through
// `host`, which also shares the NCCL unique id. Only in CUDA builds with NCCL.
bool nccl_compiled();
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<HostChannel> host, int device);

}  // namespace fg::train
