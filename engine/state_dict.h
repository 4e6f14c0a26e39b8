// An ordered name -> tensor map: what modules export and checkpoints hold.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace fg {

class StateDict {
 public:
  using Entry = std::pair<std::string, Tensor>;

  // Adds name, or replaces its tensor when already present (keeping its position).
  void insert(const std::string& name, const Tensor& tensor);
  const Tensor* find(const std::string& name) const;
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  // The tensor under name; throws naming the key when absent.
  const Tensor& at(const std::string& name) const;
  bool erase(const std::string& name);
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }

 private:
  std::vector<Entry> entries_;
};

}  // namespace fg
