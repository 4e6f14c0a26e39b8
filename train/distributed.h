// Collective communication between training processes. The trainer speaks to
// a Communicator; a single process uses the trivial one.
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

  // Sums each (contiguous, floating) tensor over the ranks, in place.
  virtual void all_reduce_sum(const std::vector<Tensor>& tensors) { (void)tensors; }
  // Copies root's values into every rank's tensor, in place.
  virtual void broadcast(const std::vector<Tensor>& tensors, int root) {
    (void)tensors;
    (void)root;
  }
  // Sums host values over the ranks (metrics), returning the totals.
  virtual std::vector<double> all_reduce_sum(std::vector<double> values) { return values; }
  virtual void barrier() {}
};

}  // namespace fg::train
