// Value: the Python objects that PyTorch checkpoints are made of (None, bool,
// int, float, str, list, tuple, dict with str or int keys, tensor), so that a
// whole checkpoint (model state dict, optimizer state, epoch, config strings)
// can be read, inspected, built and written by fgmoe.
//
// Values have value semantics: copying a Value copies its lists and dicts
// (tensors inside are handles, as everywhere in fgmoe).
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "engine/tensor.h"

namespace fg::serialize {

class Value;

// A dict key as checkpoints use them: str (state dicts, configs) or int
// (optimizer state is keyed by parameter index).
using DictKey = std::variant<int64_t, std::string>;

// The key as Python would print it: 'name' or 3.
std::string key_repr(const DictKey& key);

// An insertion-ordered dict, like Python's. `ordered()` marks a
// collections.OrderedDict (what state_dict() returns), which round-trips as one.
class Dict {
 public:
  // Defined out of line: Value is incomplete here.
  explicit Dict(bool ordered = false);

  bool ordered() const { return ordered_; }
  void set_ordered(bool ordered) { ordered_ = ordered; }

  size_t size() const { return keys_.size(); }
  bool empty() const { return keys_.empty(); }
  const DictKey& key(size_t i) const { return keys_[i]; }
  const Value& value(size_t i) const;
  Value& value(size_t i);

  const Value* find(const DictKey& key) const;
  Value* find(const DictKey& key);
  bool contains(const DictKey& key) const { return find(key) != nullptr; }
  // The value under key; throws naming the key when absent.
  const Value& at(const DictKey& key) const;
  // d[key] = value: replaces in place when present (keeping the position), else appends.
  Value& set(DictKey key, Value value);

 private:
  std::vector<DictKey> keys_;
  std::vector<Value> values_;
  std::unordered_map<DictKey, size_t> index_;
  bool ordered_ = false;
};

class Value {
 public:
  enum class Kind : uint8_t { None, Bool, Int, Float, String, List, Tuple, Dict, Tensor };

  Value() = default;  // None
  Value(std::nullptr_t) {}
  Value(bool value) : kind_(Kind::Bool), bool_(value) {}
  template <std::integral T>
    requires(!std::same_as<T, bool>)
  Value(T value) : kind_(Kind::Int), int_(checked_int(value)) {}
  template <std::floating_point T>
  Value(T value) : kind_(Kind::Float), float_(static_cast<double>(value)) {}
  Value(std::string value);
  Value(const char* value) : Value(std::string(value)) {}
  Value(Tensor tensor);  // throws when undefined
  Value(Dict dict);

  Value(const Value& other);
  Value(Value&& other) noexcept;  // leaves other None
  Value& operator=(const Value& other);
  Value& operator=(Value&& other) noexcept;
  ~Value();

  static Value list(std::vector<Value> items = {});
  static Value tuple(std::vector<Value> items = {});
  static Value dict() { return Value(Dict(false)); }
  static Value ordered_dict() { return Value(Dict(true)); }

  Kind kind() const { return kind_; }
  // "None", "bool", "int", "float", "str", "list", "tuple", "dict", "Tensor".
  const char* kind_name() const { return kind_name(kind_); }
  static const char* kind_name(Kind kind);

  bool is_none() const { return kind_ == Kind::None; }
  bool is_bool() const { return kind_ == Kind::Bool; }
  bool is_int() const { return kind_ == Kind::Int; }
  bool is_float() const { return kind_ == Kind::Float; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_list() const { return kind_ == Kind::List; }
  bool is_tuple() const { return kind_ == Kind::Tuple; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_tensor() const { return kind_ == Kind::Tensor; }

  // Typed access; each throws fg::Error naming the actual kind on a mismatch.
  bool as_bool() const;
  int64_t as_int() const;
  double as_float() const;  // also accepts an int, as Python's float() does
  const std::string& as_string() const;
  const Tensor& as_tensor() const;
  const std::vector<Value>& items() const;  // list or tuple
  std::vector<Value>& items();
  const Dict& as_dict() const;
  Dict& as_dict();

  // Dict shortcuts (throw when this is not a dict).
  const Value* find(const DictKey& key) const { return as_dict().find(key); }
  const Value& at(const DictKey& key) const { return as_dict().at(key); }
  Value& set(DictKey key, Value value) { return as_dict().set(std::move(key), std::move(value)); }

  // A Python-like rendering for messages and debugging; tensors are summarized.
  std::string repr() const;

 private:
  template <class T>
  static int64_t checked_int(T value) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(int64_t)) {
      FG_CHECK(value <= static_cast<T>(INT64_MAX), "Value: integer ", value,
               " does not fit in 64 signed bits");
    }
    return static_cast<int64_t>(value);
  }

  // str, list/tuple items, dict or tensor: only the one of kind_ is used.
  // Kept out of line so that scalars stay small and allocation-free.
  struct Payload;
  struct PayloadDeleter {  // defined where Payload is complete
    void operator()(Payload* p) const;
  };
  Payload& payload();

  Kind kind_ = Kind::None;
  bool bool_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::unique_ptr<Payload, PayloadDeleter> payload_;
};

}  // namespace fg::serialize
