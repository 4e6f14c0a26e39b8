// Define-by-run reverse-mode autodiff. Each op that produces a tensor from
// inputs that need gradients records a Node holding a backward function written
// with engine ops, so a backward runs on whatever device the tensors live on.
// backward() walks the recorded nodes once in reverse topological order and
// releases them (the graph is freed; a second backward through it is an error).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "engine/tensor.h"

namespace fg {

// Gradients for a node's inputs, filled in by its backward function.
class InputGrads {
 public:
  explicit InputGrads(const std::vector<bool>& needs) : needs_(needs), grads_(needs.size()) {}
  // Whether input i takes part in the backward (skip computing its gradient otherwise).
  bool needs(size_t i) const { return i < needs_.size() && needs_[i]; }
  void set(size_t i, Tensor grad) {
    FG_ASSERT(i < grads_.size());
    if (needs_[i]) grads_[i] = std::move(grad);
  }
  std::vector<Tensor>& grads() { return grads_; }

 private:
  const std::vector<bool>& needs_;
  std::vector<Tensor> grads_;
};

using BackwardFn = std::function<void(const Tensor& grad_output, InputGrads& grads)>;

class Node {
 public:
  // Where an input's gradient goes: the node that produced it, or the leaf itself.
  struct Edge {
    std::shared_ptr<Node> node;
    std::shared_ptr<TensorImpl> leaf;
  };

  Node(const char* name, std::vector<Edge> edges, std::vector<bool> needs,
       std::vector<Shape> input_shapes, std::vector<DType> input_dtypes, BackwardFn fn)
      : name_(name), edges_(std::move(edges)), needs_(std::move(needs)),
        input_shapes_(std::move(input_shapes)), input_dtypes_(std::move(input_dtypes)),
        fn_(std::move(fn)) {}

  const char* name() const { return name_; }
  const std::vector<Edge>& edges() const { return edges_; }
  // Runs the backward function; the result has one (possibly undefined) gradient per input,
  // in that input's dtype (as PyTorch's engine casts them: a float32 op fed by a bfloat16
  // tensor hands bfloat16 gradients back).
  std::vector<Tensor> apply(const Tensor& grad_output);
  // Frees what the backward function saved and the links to earlier nodes.
  void release();
  bool released() const { return !fn_; }

 private:
  const char* name_;
  std::vector<Edge> edges_;
  std::vector<bool> needs_;
  std::vector<Shape> input_shapes_;
  std::vector<DType> input_dtypes_;
  BackwardFn fn_;
};

// Whether ops record the graph (thread-local; on by default).
bool grad_enabled();
void set_grad_enabled(bool enabled);

class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any input requires a gradient.
bool needs_graph(std::initializer_list<const Tensor*> inputs);
bool needs_graph(const std::vector<Tensor>& inputs);

// Attaches a node computing the inputs' gradients to output, when needed.
// The backward function must not capture output itself (that would be a cycle);
// capture output.detach() instead. Returns output.
Tensor record(const char* name, Tensor output, const std::vector<Tensor>& inputs, BackwardFn fn);

// Runs a backward pass from root with the given gradient (see Tensor::backward).
void run_backward(const Tensor& root, const Tensor& gradient);

// Called during backward once a leaf's gradient is final for that backward (after
// the last node feeding it has run), once per leaf that received a gradient;
// used to start gradient communication while the rest of the backward runs.
using GradReadyHook = std::function<void(TensorImpl* leaf)>;
void set_grad_ready_hook(GradReadyHook hook);

}  // namespace fg
