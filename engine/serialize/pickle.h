// The pickle half of torch.save files (data.pkl). Internal to engine/serialize.
//
// Unpickling never runs code and never imports anything: the pickle program
// is interpreted over a small arena of plain objects. Calls of the few
// globals that tensors and state dicts need are understood (tensor rebuilds,
// OrderedDict, torch.Size); a call of any other global yields an inert
// placeholder that names it. Turning a placeholder into a Value throws,
// naming the global, so a file holding e.g. os.system is rejected by
// load_pth, while load_state_dict_pth can still take the "model" entry from a
// training checkpoint whose other entries hold objects fgmoe does not need.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/serialize/value.h"

namespace fg::serialize {

// Where the unpickler finds the bytes behind persistent storage ids.
class StorageRecords {
 public:
  virtual ~StorageRecords() = default;
  // The record's size in bytes, or nullopt when there is none for key.
  virtual std::optional<uint64_t> size(const std::string& key) const = 0;
  // Copies the whole record (size(key) bytes) into dst.
  virtual void read(const std::string& key, void* dst) const = 0;
};

class Unpickled {
 public:
  using Ref = uint32_t;

  // Interprets pickle (protocol 2 to 5) and keeps its object graph;
  // `source` names the file in errors. Throws fg::Error on malformed input.
  // records must outlive this object (storages are read on demand).
  Unpickled(std::string_view pickle, const StorageRecords& records, std::string source);
  ~Unpickled();
  Unpickled(const Unpickled&) = delete;
  Unpickled& operator=(const Unpickled&) = delete;

  Ref root() const;
  bool is_dict(Ref ref) const;
  bool is_tensor(Ref ref) const;
  // For a dict: the value under the str key, if any.
  std::optional<Ref> dict_get(Ref dict, std::string_view key) const;
  // What ref is, in words ("dict", "Tensor", "object made by yacs.config.CfgNode", ...).
  std::string describe(Ref ref) const;

  // Builds the Value for ref, reading the storages it needs. `path` (e.g.
  // "['model']") prefixes errors that point into the structure.
  Value to_value(Ref ref, const std::string& path = "");

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A storage that pickle_value assigned a key; the caller writes its bytes as
// the archive record data/<key>.
struct PickledStorage {
  std::string key;
  std::shared_ptr<Storage> storage;
  DType dtype;
  uint64_t numel;  // elements of dtype
};

// Serializes value the way torch.save's pickler does (protocol 2, tensors as
// torch._utils._rebuild_tensor_v2 calls over persistent storage ids, one
// storage per distinct fgmoe Storage). `target` names the file in errors.
std::string pickle_value(const Value& value, std::vector<PickledStorage>& storages,
                         const std::string& target);

// Nesting deeper than this is rejected on load and on save; checkpoints nest
// a handful of levels.
constexpr int kMaxNesting = 200;

}  // namespace fg::serialize
