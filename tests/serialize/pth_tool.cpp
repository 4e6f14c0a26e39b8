// A test-only bridge between fgmoe's serialization and a Python oracle:
// dumps what fgmoe loads from a file as JSON, and writes files from a JSON
// description. interop_torch.py drives it against real PyTorch.
//
//   pth_tool dump <file.pth>                   the whole value (load_pth)
//   pth_tool dump-tensor <file.pth>            load_tensor_pth
//   pth_tool dump-state-dict <file.pth>        load_state_dict_pth
//   pth_tool dump-safetensors <file>           read_safetensors
//   pth_tool write <spec.json> <out.pth> [--zip64]
//   pth_tool write-tensor <spec.json> <out.pth>
//   pth_tool write-state-dict <spec.json> <out.pth>
//   pth_tool write-safetensors <spec.json> <out.safetensors>
//
// JSON encoding of values (the same both ways): null, true/false, integers;
// {"float": "<repr>"}; {"str": "..."}; {"list": [...]}; {"tuple": [...]};
// {"dict": [[key, value], ...], "ordered": bool} with str or int keys;
// {"tensor": {...}}. A dumped tensor carries dtype, shape, strides, offset,
// storage (an id per distinct storage), storage_numel and its values in
// row-major order. A tensor to write names a storage of the spec's
// "storages" ({"key": {"dtype": ..., "values": [...]}}) and its geometry.
// Non-finite floats are the strings "nan", "inf", "-inf".
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/serialize/pth.h"
#include "engine/serialize/safetensors.h"

using namespace fg;
using namespace fg::serialize;
using Json = nlohmann::ordered_json;

namespace {

std::string float_text(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.17g", x);
  return buf;
}

double parse_float(const Json& j) {
  if (j.is_number()) return j.get<double>();
  const std::string s = j.get<std::string>();
  if (s == "nan") return std::nan("");
  if (s == "inf") return INFINITY;
  if (s == "-inf") return -INFINITY;
  return std::stod(s);
}

DType parse_dtype(const std::string& name) {
  for (DType d : {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16, DType::Int32,
                  DType::Int64, DType::UInt8, DType::Bool}) {
    if (name == dtype_name(d)) return d;
  }
  throw fg::Error("pth_tool: unknown dtype " + name);
}

// ---------------------------------------------------------------- dump

class Dumper {
 public:
  Json tensor(const Tensor& t) {
    auto [it, inserted] = storage_ids_.emplace(t.storage().get(), storage_ids_.size());
    Json values = Json::array();
    if (is_floating(t.dtype())) {
      for (double x : t.to(DType::Float64).contiguous().to_vector<double>()) {
        if (std::isfinite(x)) {
          values.push_back(x);
        } else {
          values.push_back(float_text(x));
        }
      }
    } else {
      for (int64_t x : t.to(DType::Int64).contiguous().to_vector<int64_t>()) values.push_back(x);
    }
    return Json{{"tensor",
                 {{"dtype", dtype_name(t.dtype())},
                  {"shape", t.shape()},
                  {"strides", t.strides()},
                  {"offset", t.offset()},
                  {"storage", it->second},
                  {"storage_numel", t.storage()->nbytes() / t.element_size()},
                  {"values", values}}}};
  }

  Json value(const Value& v) {
    switch (v.kind()) {
      case Value::Kind::None: return nullptr;
      case Value::Kind::Bool: return v.as_bool();
      case Value::Kind::Int: return v.as_int();
      case Value::Kind::Float: return Json{{"float", float_text(v.as_float())}};
      case Value::Kind::String: return Json{{"str", v.as_string()}};
      case Value::Kind::List:
      case Value::Kind::Tuple: {
        Json items = Json::array();
        for (const Value& x : v.items()) items.push_back(value(x));
        return Json{{v.is_list() ? "list" : "tuple", items}};
      }
      case Value::Kind::Dict: {
        Json items = Json::array();
        const Dict& d = v.as_dict();
        for (size_t i = 0; i < d.size(); ++i) {
          const DictKey& k = d.key(i);
          Json key = std::holds_alternative<int64_t>(k) ? Json(std::get<int64_t>(k))
                                                        : Json(std::get<std::string>(k));
          items.push_back(Json::array({key, value(d.value(i))}));
        }
        return Json{{"dict", items}, {"ordered", d.ordered()}};
      }
      case Value::Kind::Tensor: return tensor(v.as_tensor());
    }
    return nullptr;
  }

  Json state_dict(const StateDict& sd) {
    Json items = Json::array();
    for (const auto& [name, t] : sd) items.push_back(Json::array({name, tensor(t)}));
    return Json{{"dict", items}, {"ordered", true}};
  }

 private:
  std::map<const Storage*, size_t> storage_ids_;
};

// ---------------------------------------------------------------- write

class Builder {
 public:
  explicit Builder(const Json& storages) {
    for (const auto& [key, spec] : storages.items()) {
      const DType dtype = parse_dtype(spec.at("dtype").get<std::string>());
      const Json& values = spec.at("values");
      const Shape shape{static_cast<int64_t>(values.size())};
      Tensor t;
      if (is_floating(dtype)) {
        std::vector<double> v;
        for (const auto& x : values) v.push_back(parse_float(x));
        t = Tensor::from_vector<double>(v, shape).to(dtype);
      } else {
        std::vector<int64_t> v;
        for (const auto& x : values) v.push_back(x.is_boolean() ? int64_t{x.get<bool>()} : x.get<int64_t>());
        t = Tensor::from_vector<int64_t>(v, shape).to(dtype);
      }
      storages_[key] = {t.storage(), dtype};
    }
  }

  Tensor tensor(const Json& j) {
    const auto& [storage, dtype] = storages_.at(j.at("storage").get<std::string>());
    return Tensor::from_storage(storage, j.at("shape").get<Shape>(), j.at("strides").get<Shape>(),
                                j.at("offset").get<int64_t>(), dtype);
  }

  Value value(const Json& j) {
    if (j.is_null()) return Value();
    if (j.is_boolean()) return Value(j.get<bool>());
    if (j.is_number_integer()) return Value(j.get<int64_t>());
    if (j.contains("float")) return Value(parse_float(j.at("float")));
    if (j.contains("str")) return Value(j.at("str").get<std::string>());
    if (j.contains("tensor")) return Value(tensor(j.at("tensor")));
    if (j.contains("list") || j.contains("tuple")) {
      std::vector<Value> items;
      for (const auto& x : j.contains("list") ? j.at("list") : j.at("tuple")) items.push_back(value(x));
      return j.contains("list") ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    if (j.contains("dict")) {
      Dict d(j.value("ordered", false));
      for (const auto& kv : j.at("dict")) {
        if (kv[0].is_string()) {
          d.set(kv[0].get<std::string>(), value(kv[1]));
        } else {
          d.set(kv[0].get<int64_t>(), value(kv[1]));
        }
      }
      return Value(std::move(d));
    }
    throw fg::Error("pth_tool: cannot decode " + j.dump().substr(0, 200));
  }

 private:
  std::map<std::string, std::pair<std::shared_ptr<Storage>, DType>> storages_;
};

Json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw fg::Error("pth_tool: cannot read " + path);
  return Json::parse(in);
}

int usage() {
  std::cerr << "usage: pth_tool dump|dump-tensor|dump-state-dict|dump-safetensors <file>\n"
               "       pth_tool write|write-tensor|write-state-dict|write-safetensors <spec.json> "
               "<out> [--zip64]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string command = argv[1];
  try {
    Dumper dumper;
    Json out;
    if (command == "dump") {
      out = dumper.value(load_pth(argv[2]));
    } else if (command == "dump-tensor") {
      out = dumper.tensor(load_tensor_pth(argv[2]));
    } else if (command == "dump-state-dict") {
      out = dumper.state_dict(load_state_dict_pth(argv[2]));
    } else if (command == "dump-safetensors") {
      const SafetensorsContents c = read_safetensors(argv[2]);
      out = {{"tensors", dumper.state_dict(c.tensors)}, {"metadata", c.metadata}};
    } else if (argc >= 4 && command.rfind("write", 0) == 0) {
      const Json spec = read_json(argv[2]);
      Builder builder(spec.value("storages", Json::object()));
      const std::string target = argv[3];
      if (command == "write") {
        PthSaveOptions options;
        options.force_zip64 = argc >= 5 && std::string(argv[4]) == "--zip64";
        save_pth(target, builder.value(spec.at("value")), options);
      } else if (command == "write-tensor") {
        save_tensor_pth(target, builder.value(spec.at("value")).as_tensor());
      } else if (command == "write-state-dict") {
        save_state_dict_pth(target, state_dict_from_value(builder.value(spec.at("value")), "spec"));
      } else if (command == "write-safetensors") {
        std::vector<std::pair<std::string, std::string>> metadata;
        for (const auto& kv : spec.value("metadata", Json::array())) {
          metadata.emplace_back(kv[0].get<std::string>(), kv[1].get<std::string>());
        }
        save_safetensors(target, state_dict_from_value(builder.value(spec.at("value")), "spec"),
                         metadata);
      } else {
        return usage();
      }
      return 0;
    } else {
      return usage();
    }
    std::cout << out.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
    return 0;
  } catch (const fg::Error& e) {
    // Exit code 3 marks an fgmoe error (the message is what tests check).
    std::cout << Json{{"error", e.what()}}.dump(-1, ' ', false, Json::error_handler_t::replace)
              << "\n";
    return 3;
  }
}
