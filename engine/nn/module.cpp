#include "engine/nn/module.h"

#include "engine/autograd.h"
#include "engine/ops.h"

namespace fg::nn {

void Module::register_parameter(const std::string& name, Tensor* slot) {
  FG_CHECK(slot && slot->defined(), "register_parameter: '", name, "' is undefined");
  if (slot->is_leaf() && is_floating(slot->dtype())) slot->set_requires_grad(true);
  parameters_.emplace_back(name, slot);
}

void Module::register_buffer(const std::string& name, Tensor* slot) {
  buffers_.emplace_back(name, slot);
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  FG_CHECK(module != nullptr, "register_module: '", name, "' is null");
  children_.emplace_back(name, std::move(module));
}

template <class F>
void Module::visit_tensors(const std::string& prefix, bool parameters, F&& fn) const {
  for (const auto& [name, slot] : parameters ? parameters_ : buffers_) fn(prefix + name, slot);
  for (const auto& [name, child] : children_)
    child->visit_tensors(prefix + name + ".", parameters, fn);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  visit_tensors("", true, [&](const std::string& name, Tensor* t) { out.emplace_back(name, *t); });
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  visit_tensors("", true, [&](const std::string&, Tensor* t) { out.push_back(*t); });
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  visit_tensors("", false, [&](const std::string& name, Tensor* t) { out.emplace_back(name, *t); });
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  return children_;
}

StateDict Module::state_dict() const {
  StateDict out;
  for (auto& [name, t] : named_parameters()) out.insert(name, t.detach());
  for (auto& [name, t] : named_buffers()) out.insert(name, t.detach());
  return out;
}

std::string Module::LoadReport::str() const {
  std::string s;
  auto list = [&](const char* title, const std::vector<std::string>& keys) {
    if (keys.empty()) return;
    s += std::string(title) + " (" + std::to_string(keys.size()) + "):";
    for (const auto& k : keys) s += "\n  " + k;
    s += "\n";
  };
  list("missing keys", missing);
  list("unexpected keys", unexpected);
  list("shape mismatches", mismatched);
  return s;
}

Module::LoadReport Module::load_state_dict(const StateDict& state, bool strict) {
  LoadReport report;
  std::vector<std::pair<Tensor*, const Tensor*>> assignments;
  std::vector<std::string> known;
  auto check = [&](const std::string& name, Tensor* slot) {
    known.push_back(name);
    const Tensor* src = state.find(name);
    if (!src) {
      report.missing.push_back(name);
      return;
    }
    if (src->shape() != slot->shape()) {
      report.mismatched.push_back(name + ": expected " + shape_str(slot->shape()) + ", got " +
                                  shape_str(src->shape()));
      return;
    }
    assignments.emplace_back(slot, src);
  };
  visit_tensors("", true, check);
  visit_tensors("", false, check);
  for (const auto& [name, t] : state) {
    bool found = false;
    for (const auto& k : known) found = found || k == name;
    if (!found) report.unexpected.push_back(name);
  }
  if (strict && !report.ok())
    FG_CHECK(false, "load_state_dict: the state dict does not match the model\n", report.str());
  NoGradGuard no_grad;
  for (auto& [slot, src] : assignments) copy_(*slot, src->to(slot->device()));
  return report;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  visit_tensors("", true, [](const std::string&, Tensor* t) { t->zero_grad(); });
}

void Module::to(Device device) {
  NoGradGuard no_grad;
  visit_tensors("", true, [&](const std::string&, Tensor* t) {
    if (t->device() == device) return;
    *t = t->to(device);
    t->set_requires_grad(true);
  });
  visit_tensors("", false, [&](const std::string&, Tensor* t) { *t = t->to(device); });
}

void Module::to(DType dtype) {
  NoGradGuard no_grad;
  visit_tensors("", true, [&](const std::string&, Tensor* t) {
    if (t->dtype() == dtype || !is_floating(t->dtype())) return;
    *t = t->to(dtype);
    t->set_requires_grad(true);
  });
  visit_tensors("", false, [&](const std::string&, Tensor* t) {
    if (is_floating(t->dtype())) *t = t->to(dtype);
  });
}

}  // namespace fg::nn
