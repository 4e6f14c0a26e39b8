// Collective communication between training processes. The trainer speaks to
// a Communicator; a single process uses the trivial one. The multi-process
// backends (TCP, MPI, NCCL) are made by make_communicator (train/launcher.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace fg::train {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const { return 0; }
  virtual int world_size() const { return 1; }
  virtual int local_rank() const { return 0; }
  virtual std::string backend_name() const { return "single process"; }
  bool is_main() const { return rank() == 0; }

  // Sums each (contiguous, floating) tensor over the ranks, in place. Every
  // rank ends with bit-identical values.
  virtual void all_reduce_sum(const std::vector<Tensor>& tensors) { (void)tensors; }
  // Copies root's values into every rank's tensor, in place.
  virtual void broadcast(const std::vector<Tensor>& tensors, int root) {
    (void)tensors;
    (void)root;
  }
  // Sums host values over the ranks (metrics), returning the totals.
  virtual std::vector<double> all_reduce_sum(std::vector<double> values) { return values; }
  virtual void barrier() {}

  // Split-phase all-reduce for gradient buckets. start() queues the sum of one
  // contiguous tensor; after wait_pending() every started sum is in place (for
  // a GPU backend: in the order of the device's stream, without blocking the
  // host). Every rank must start the same tensors in the same order. Backends
  // that cannot overlap communication with computation sum at once in start().
  virtual void all_reduce_sum_start(const Tensor& tensor) { all_reduce_sum(std::vector<Tensor>{tensor}); }
  virtual void wait_pending() {}
  // Whether starting a sum during the backward pass lets it run alongside the
  // rest of the backward (true for NCCL on its own stream).
  virtual bool overlaps_compute() const { return false; }
};

}  // namespace fg::train
