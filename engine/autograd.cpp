#include "engine/autograd.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "engine/ops.h"

namespace fg {

namespace {
thread_local bool g_grad_enabled = true;
GradReadyHook g_grad_ready_hook;
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool enabled) { g_grad_enabled = enabled; }
void set_grad_ready_hook(GradReadyHook hook) { g_grad_ready_hook = std::move(hook); }

bool needs_graph(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_graph(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

std::vector<Tensor> Node::apply(const Tensor& grad_output) {
  FG_CHECK(fn_ != nullptr, "backward through the graph a second time (node '", name_,
           "'): its saved tensors were freed by the first backward");
  InputGrads grads(needs_);
  fn_(grad_output, grads);
  std::vector<Tensor>& result = grads.grads();
  for (size_t i = 0; i < result.size(); ++i) {
    if (!result[i].defined()) continue;
    FG_CHECK(result[i].shape() == input_shapes_[i], "internal error: backward of '", name_,
             "' produced a gradient of shape ", shape_str(result[i].shape()), " for input ", i,
             " of shape ", shape_str(input_shapes_[i]));
    if (result[i].dtype() != input_dtypes_[i]) result[i] = result[i].to(input_dtypes_[i]);
  }
  return std::move(result);
}

void Node::release() {
  fn_ = nullptr;
  edges_.clear();
}

Tensor record(const char* name, Tensor output, const std::vector<Tensor>& inputs, BackwardFn fn) {
  if (!needs_graph(inputs)) return output;
  std::vector<Node::Edge> edges(inputs.size());
  std::vector<bool> needs(inputs.size(), false);
  std::vector<Shape> shapes(inputs.size());
  std::vector<DType> dtypes(inputs.size(), DType::Float32);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    if (!in.defined() || !in.requires_grad()) continue;
    needs[i] = true;
    shapes[i] = in.shape();
    dtypes[i] = in.dtype();
    if (in.grad_fn()) edges[i].node = in.grad_fn();
    else edges[i].leaf = in.impl_ptr();
  }
  auto node = std::make_shared<Node>(name, std::move(edges), std::move(needs), std::move(shapes),
                                     std::move(dtypes), std::move(fn));
  output.impl()->grad_fn = std::move(node);
  output.impl()->requires_grad = true;
  return output;
}

namespace {

void accumulate_leaf(TensorImpl* leaf, Tensor grad) {
  if (grad.dtype() != leaf->dtype) grad = grad.to(leaf->dtype);
  if (!leaf->grad.defined()) {
    // Own the storage: the same gradient tensor may have been handed to several inputs,
    // and later accumulation happens in place.
    const bool exclusive = grad.is_contiguous() && grad.impl_ptr().use_count() == 1 &&
                           grad.storage().use_count() == 1 &&
                           grad.numel() * static_cast<int64_t>(grad.element_size()) ==
                               static_cast<int64_t>(grad.storage()->nbytes());
    leaf->grad = exclusive ? grad : grad.clone();
  } else {
    add_(leaf->grad, grad);
  }
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& gradient_in) {
  FG_CHECK(root.requires_grad(), "backward() on a tensor that does not require a gradient");
  FG_CHECK(gradient_in.shape() == root.shape(), "backward(): gradient of shape ",
           shape_str(gradient_in.shape()), " for a tensor of shape ", shape_str(root.shape()));
  FG_CHECK(gradient_in.device() == root.device(), "backward(): gradient on ", gradient_in.device().str(),
           " for a tensor on ", root.device().str());
  NoGradGuard no_grad;
  // Kernels read the gradient as the root's dtype (PyTorch casts it the same way).
  const Tensor gradient = gradient_in.to(root.dtype());
  if (!root.grad_fn()) {
    accumulate_leaf(root.impl(), gradient);
    if (g_grad_ready_hook) g_grad_ready_hook(root.impl());
    return;
  }
  // Reverse topological order by an iterative depth-first search.
  std::vector<Node*> order;
  std::unordered_set<Node*> visited;
  std::vector<std::pair<Node*, size_t>> stack;
  stack.emplace_back(root.grad_fn().get(), 0);
  visited.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    const auto& edges = node->edges();
    if (next < edges.size()) {
      Node* child = edges[next++].node.get();
      if (child && visited.insert(child).second) stack.emplace_back(child, 0);
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  // Keep every node alive until the walk ends (releasing a node drops its edges).
  std::vector<std::shared_ptr<Node>> keep_alive;
  keep_alive.reserve(order.size());
  for (Node* n : order) {
    for (const auto& e : n->edges())
      if (e.node) keep_alive.push_back(e.node);
  }
  keep_alive.push_back(root.grad_fn());

  // A leaf's gradient is final after the last node with an edge to it has run:
  // the grad-ready hook fires then, once per leaf that received a gradient.
  std::unordered_map<TensorImpl*, Node*> last_user;
  std::vector<std::vector<TensorImpl*>> final_leaves;
  if (g_grad_ready_hook) {
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      for (const auto& e : (*it)->edges())
        if (e.leaf) last_user[e.leaf.get()] = *it;
    std::unordered_map<Node*, size_t> position;
    for (size_t k = 0; k < order.size(); ++k) position[order[order.size() - 1 - k]] = k;
    final_leaves.resize(order.size());
    for (const auto& [leaf, node] : last_user) final_leaves[position[node]].push_back(leaf);
    // Deterministic order within a node: its edge order.
    for (size_t k = 0; k < order.size(); ++k) {
      auto& leaves = final_leaves[k];
      if (leaves.size() < 2) continue;
      std::vector<TensorImpl*> sorted;
      for (const auto& e : order[order.size() - 1 - k]->edges())
        for (TensorImpl* l : leaves)
          if (e.leaf.get() == l && std::find(sorted.begin(), sorted.end(), l) == sorted.end()) sorted.push_back(l);
      leaves = std::move(sorted);
    }
  }
  std::unordered_set<TensorImpl*> received;
  auto fire_final = [&](size_t k) {
    if (!g_grad_ready_hook) return;
    for (TensorImpl* leaf : final_leaves[k])
      if (received.count(leaf)) g_grad_ready_hook(leaf);
  };

  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = gradient;
  size_t step = 0;
  for (auto it = order.rbegin(); it != order.rend(); ++it, ++step) {
    Node* node = *it;
    auto found = pending.find(node);
    if (found == pending.end()) {
      node->release();
      fire_final(step);
      continue;
    }
    Tensor grad_output = std::move(found->second);
    pending.erase(found);
    std::vector<Tensor> grads = node->apply(grad_output);
    grad_output = Tensor();
    const auto edges = node->edges();
    node->release();
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined()) continue;
      if (edges[i].node) {
        Tensor& slot = pending[edges[i].node.get()];
        slot = slot.defined() ? add(slot, grads[i]) : grads[i];
      } else if (edges[i].leaf) {
        // Moved, so a freshly computed gradient is adopted without a copy.
        accumulate_leaf(edges[i].leaf.get(), std::move(grads[i]));
        if (g_grad_ready_hook) received.insert(edges[i].leaf.get());
      }
    }
    fire_final(step);
  }
}

}  // namespace fg
