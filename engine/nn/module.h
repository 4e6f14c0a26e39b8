// Modules: trees of named parameters and buffers whose dotted names are the
// reference's state_dict keys, with train/eval mode.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/state_dict.h"
#include "engine/tensor.h"

namespace fg::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Recursively, in registration order: "norm1.weight", "layers.0.linear.bias", ...
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;

  // Parameters then buffers, detached (they share storage with the module).
  StateDict state_dict() const;

  struct LoadReport {
    std::vector<std::string> missing;     // in the module, not in the state dict
    std::vector<std::string> unexpected;  // in the state dict, not in the module
    std::vector<std::string> mismatched;  // "name: expected (a, b), got (c, d)"
    bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
    std::string str() const;
  };
  // Copies values in (converting dtype and device). Strict: throws listing every
  // problem key by name and loads nothing. Non-strict: loads what matches, reports the rest.
  LoadReport load_state_dict(const StateDict& state, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();
  // Moves every parameter and buffer to device (parameters stay leaves needing gradients).
  void to(Device device);
  // Converts floating parameters and buffers to dtype.
  void to(DType dtype);

 protected:
  // The slot must outlive the module (a member of it). Marks the tensor as needing a gradient.
  void register_parameter(const std::string& name, Tensor* slot);
  void register_buffer(const std::string& name, Tensor* slot);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  template <class F>
  void visit_tensors(const std::string& prefix, bool parameters, F&& fn) const;

  std::vector<std::pair<std::string, Tensor*>> parameters_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// Children named "0", "1", ... as torch.nn.ModuleList.
template <class M>
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<M> module) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(module)));
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_[i]; }
  const std::vector<std::shared_ptr<M>>& items() const { return items_; }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace fg::nn
