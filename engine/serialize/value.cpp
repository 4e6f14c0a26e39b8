#include "engine/serialize/value.h"

#include <cmath>
#include <sstream>

namespace fg::serialize {

Dict::Dict(bool ordered) : ordered_(ordered) {}

namespace {

// Python's repr of a str, close enough for messages: quotes and escapes.
std::string string_repr(const std::string& s) {
  std::string out = "'";
  for (unsigned char c : s) {
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "'";
}

std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os.precision(17);
  os << x;
  std::string s = os.str();
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

void repr_into(const Value& v, std::string& out, int depth);

void repr_items(const std::vector<Value>& items, std::string& out, int depth) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    repr_into(items[i], out, depth + 1);
  }
}

void repr_into(const Value& v, std::string& out, int depth) {
  // repr is for messages; a pathological nesting is cut rather than recursed into.
  if (depth > 64) {
    out += "...";
    return;
  }
  switch (v.kind()) {
    case Value::Kind::None: out += "None"; break;
    case Value::Kind::Bool: out += v.as_bool() ? "True" : "False"; break;
    case Value::Kind::Int: out += std::to_string(v.as_int()); break;
    case Value::Kind::Float: out += float_repr(v.as_float()); break;
    case Value::Kind::String: out += string_repr(v.as_string()); break;
    case Value::Kind::List:
      out += "[";
      repr_items(v.items(), out, depth);
      out += "]";
      break;
    case Value::Kind::Tuple:
      out += "(";
      repr_items(v.items(), out, depth);
      if (v.items().size() == 1) out += ",";
      out += ")";
      break;
    case Value::Kind::Dict: {
      const Dict& d = v.as_dict();
      out += d.ordered() ? "OrderedDict({" : "{";
      for (size_t i = 0; i < d.size(); ++i) {
        if (i) out += ", ";
        out += key_repr(d.key(i));
        out += ": ";
        repr_into(d.value(i), out, depth + 1);
      }
      out += d.ordered() ? "})" : "}";
      break;
    }
    case Value::Kind::Tensor: {
      const Tensor& t = v.as_tensor();
      out += str_cat("tensor(shape=", shape_str(t.shape()), ", dtype=", dtype_name(t.dtype()), ")");
      break;
    }
  }
}

}  // namespace

std::string key_repr(const DictKey& key) {
  if (const auto* i = std::get_if<int64_t>(&key)) return std::to_string(*i);
  return string_repr(std::get<std::string>(key));
}

// ---------------------------------------------------------------- Dict

const Value& Dict::value(size_t i) const { return values_[i]; }
Value& Dict::value(size_t i) { return values_[i]; }

const Value* Dict::find(const DictKey& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &values_[it->second];
}

Value* Dict::find(const DictKey& key) {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &values_[it->second];
}

const Value& Dict::at(const DictKey& key) const {
  const Value* v = find(key);
  FG_CHECK(v != nullptr, "dict has no key ", key_repr(key));
  return *v;
}

Value& Dict::set(DictKey key, Value value) {
  auto [it, inserted] = index_.emplace(key, keys_.size());
  if (!inserted) return values_[it->second] = std::move(value);
  keys_.push_back(std::move(key));
  values_.push_back(std::move(value));
  return values_.back();
}

// ---------------------------------------------------------------- Value

struct Value::Payload {
  std::string text;
  std::vector<Value> items;
  Dict dict;
  Tensor tensor;
};

void Value::PayloadDeleter::operator()(Payload* p) const { delete p; }

Value::Payload& Value::payload() {
  if (!payload_) payload_.reset(new Payload());
  return *payload_;
}

Value::Value(std::string value) : kind_(Kind::String) { payload().text = std::move(value); }

Value::Value(Tensor tensor) : kind_(Kind::Tensor) {
  FG_CHECK(tensor.defined(), "Value: an undefined tensor cannot be a value");
  payload().tensor = std::move(tensor);
}

Value::Value(Dict dict) : kind_(Kind::Dict) { payload().dict = std::move(dict); }

Value::Value(const Value& other)
    : kind_(other.kind_), bool_(other.bool_), int_(other.int_), float_(other.float_) {
  if (other.payload_) payload_.reset(new Payload(*other.payload_));
}

Value::Value(Value&& other) noexcept
    : kind_(other.kind_),
      bool_(other.bool_),
      int_(other.int_),
      float_(other.float_),
      payload_(std::move(other.payload_)) {
  other.kind_ = Kind::None;
}

Value& Value::operator=(const Value& other) {
  if (this != &other) *this = Value(other);
  return *this;
}

Value& Value::operator=(Value&& other) noexcept {
  if (this != &other) {
    kind_ = other.kind_;
    bool_ = other.bool_;
    int_ = other.int_;
    float_ = other.float_;
    payload_ = std::move(other.payload_);
    other.kind_ = Kind::None;
  }
  return *this;
}

Value::~Value() = default;

Value Value::list(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::List;
  v.payload().items = std::move(items);
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::Tuple;
  v.payload().items = std::move(items);
  return v;
}

const char* Value::kind_name(Kind kind) {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return "dict";
    case Kind::Tensor: return "Tensor";
  }
  return "?";
}

bool Value::as_bool() const {
  FG_CHECK(kind_ == Kind::Bool, "expected a bool, got a ", kind_name());
  return bool_;
}

int64_t Value::as_int() const {
  FG_CHECK(kind_ == Kind::Int, "expected an int, got a ", kind_name());
  return int_;
}

double Value::as_float() const {
  if (kind_ == Kind::Int) return static_cast<double>(int_);
  FG_CHECK(kind_ == Kind::Float, "expected a float, got a ", kind_name());
  return float_;
}

const std::string& Value::as_string() const {
  FG_CHECK(kind_ == Kind::String, "expected a str, got a ", kind_name());
  return payload_->text;
}

const Tensor& Value::as_tensor() const {
  FG_CHECK(kind_ == Kind::Tensor, "expected a Tensor, got a ", kind_name());
  return payload_->tensor;
}

const std::vector<Value>& Value::items() const {
  FG_CHECK(kind_ == Kind::List || kind_ == Kind::Tuple, "expected a list or tuple, got a ",
           kind_name());
  return payload_->items;
}

std::vector<Value>& Value::items() {
  FG_CHECK(kind_ == Kind::List || kind_ == Kind::Tuple, "expected a list or tuple, got a ",
           kind_name());
  return payload_->items;
}

const Dict& Value::as_dict() const {
  FG_CHECK(kind_ == Kind::Dict, "expected a dict, got a ", kind_name());
  return payload_->dict;
}

Dict& Value::as_dict() {
  FG_CHECK(kind_ == Kind::Dict, "expected a dict, got a ", kind_name());
  return payload_->dict;
}

std::string Value::repr() const {
  std::string out;
  repr_into(*this, out, 0);
  return out;
}

}  // namespace fg::serialize
