// Whole-step CUDA graphs: a training step's kernels recorded once and replayed
// with one launch, so the host no longer pays the per-kernel launch cost (a few
// microseconds each, hundreds of kernels a step) and the GPU runs them back to
// back.
//
// What a captured step may do, and what it may not:
// - Tensors the step reads from outside (inputs, parameters, optimizer state)
//   must stay alive, at the same addresses, for as long as the graph is
//   replayed: copy each new batch into the same input tensors (copy_) before
//   replay(), never replace them.
// - Memory the step allocates comes from a pool of the graph's own: the graph
//   writes it at every replay, so nothing outside the graph is ever handed it.
//   What the step leaves behind (the loss, the gradients) stays valid until
//   the next replay.
// - Dropout draws: a Generator used inside the capture is registered with the
//   graph; each replay shifts its draws by how far the host generator moved
//   since the capture and advances it, so replays draw what eager steps would
//   have drawn (bit for bit). The generator must outlive the graph.
// - Values that change between steps (AdamW's learning rate and step count)
//   are written by host work registered with cuda_graph_on_replay, which runs
//   before every replay.
// - Not allowed inside a capture (each throws, naming what was attempted):
//   reading tensor data on the host, uploads that wait, synchronize(), host
//   random numbers, random fills (uniform_, normal_).
// - Warm up with at least one eager step first: lazily created state (AdamW's
//   moments, library workspaces, the allocator's blocks) must exist before the
//   capture, or it would be created inside the graph and reset at every replay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace fg {

class Generator;

// Whether this thread is capturing a CUDA graph now.
bool cuda_graph_capturing();

// During a capture: fn runs on the host before every replay of the graph being
// captured (not now), in the order registered. Throws outside a capture.
void cuda_graph_on_replay(std::function<void()> fn);

// Queues a write of `values` (at most 16) into the contiguous float64 CUDA
// tensor dst of as many elements: one launch whose argument carries the
// values, so the host neither waits nor keeps a buffer alive. For work
// registered with cuda_graph_on_replay.
void cuda_write_float64(const Tensor& dst, const std::vector<double>& values);

// During a capture: where the kernels of gen's draws read the shift the next
// replay adds to their Philox offsets (device memory); registers gen with the
// capture on its first draw. Generator::next_offset calls it.
const uint64_t* cuda_graph_offset_base(Generator& gen);

// The tensors a captured step reads its batch from: copies of the batch it was
// captured with (undefined entries stay undefined). Later batches of the same
// shapes are copied into them (device to device, queued) before each replay.
class GraphInputs {
 public:
  GraphInputs() = default;
  explicit GraphInputs(const std::vector<Tensor>& batch);
  const std::vector<Tensor>& tensors() const { return tensors_; }
  // Whether batch has the same entries defined, with the same shapes and dtypes.
  bool fits(const std::vector<Tensor>& batch) const;
  // Copies batch into the inputs; throws when it does not fit.
  void copy_from(const std::vector<Tensor>& batch) const;

 private:
  std::vector<Tensor> tensors_;
};

class CudaGraph {
 public:
  CudaGraph();
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Runs step on this thread with the device's stream capturing: its kernels
  // are recorded, not run, and the generators it draws from are left where
  // they were (the first replay is the step the capture recorded). Throws, with
  // CUDA's reason, when the step does something a graph cannot hold; nothing is
  // kept then. Any earlier capture of this object is dropped first.
  void capture(const std::function<void()>& step);
  // Runs the registered host work, then the whole graph, queued on the device's
  // stream (the host does not wait).
  void replay();
  bool captured() const;
  // Kernel, copy and memset nodes in the captured graph.
  size_t nodes() const;
  // Device memory the graph's pool holds (what its replays write).
  size_t pool_bytes() const;
  // Drops the graph and gives its pool back (after the queued replays finish).
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fg
