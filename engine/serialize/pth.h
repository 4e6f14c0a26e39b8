// PyTorch .pth files: what torch.save writes (a zip archive holding a pickle
// and the raw tensor storages) and what torch.load(weights_only=True) reads.
//
// Loading is restricted like weights_only=True: no code runs, and only
// tensors, dicts (str or int keys), lists, tuples, str, int, float, bool and
// None are built; anything else is an fg::Error naming it. Loaded tensors are
// CPU tensors with the file's dtype (float16/bfloat16 stay storage dtypes;
// convert with Tensor::to). Tensors that shared a storage in the file share
// one fgmoe Storage, with their offsets and strides.
//
// Saving writes what torch.save writes (protocol 2 pickle, each distinct
// storage once, whole), atomically: the data goes to `<path>.tmp`, which is
// renamed onto path only when complete.
#pragma once

#include <string>

#include "engine/serialize/value.h"
#include "engine/state_dict.h"

namespace fg::serialize {

Value load_pth(const std::string& path);
void save_pth(const std::string& path, const Value& value);

// A file holding one tensor (torch.save(tensor)), e.g. a mask.
Tensor load_tensor_pth(const std::string& path);
void save_tensor_pth(const std::string& path, const Tensor& t);

// A state dict file, or a checkpoint dict holding one under "model" (also
// "state_dict" or "model_state"). Only that entry needs to be loadable: other
// entries of a training checkpoint (say, a pickled config object) are skipped
// unread, never executed.
StateDict load_state_dict_pth(const std::string& path);
// Writes an OrderedDict of name -> tensor, as torch.save(module.state_dict()).
void save_state_dict_pth(const std::string& path, const StateDict& state);

// ---- beyond the basics ----

struct PthSaveOptions {
  // Writes zip64 records even for small files (torch's reader handles both;
  // sizes beyond 4 GiB always use them). For tests.
  bool force_zip64 = false;
};
void save_pth(const std::string& path, const Value& value, const PthSaveOptions& options);

// The loaders above, on bytes in memory; `name` stands for the file in errors.
Value load_pth_from_memory(const void* data, size_t size, const std::string& name);
StateDict load_state_dict_pth_from_memory(const void* data, size_t size, const std::string& name);

// An OrderedDict of name -> tensor, as torch's state_dict() returns.
Value state_dict_to_value(const StateDict& state);
// The dict's entries as a StateDict; every key must be a str and every value
// a tensor. `what` names the source in errors.
StateDict state_dict_from_value(const Value& value, const std::string& what);

}  // namespace fg::serialize
