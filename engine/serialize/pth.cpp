#include "engine/serialize/pth.h"

#include <optional>

#include "engine/serialize/byte_io.h"
#include "engine/serialize/pickle.h"
#include "engine/serialize/zip.h"

namespace fg::serialize {

namespace {

// The folder torch.save puts its records in is the file's stem (torch 1.x) or
// "archive" (torch 2.x); readers take whatever holds data.pkl.
constexpr const char* kArchiveFolder = "archive";

class ZipStorageRecords final : public StorageRecords {
 public:
  ZipStorageRecords(const ZipReader& zip, std::string prefix)
      : zip_(zip), prefix_(std::move(prefix)) {}

  std::optional<uint64_t> size(const std::string& key) const override {
    const ZipEntry* e = zip_.find(prefix_ + key);
    if (!e) return std::nullopt;
    return e->size;
  }
  void read(const std::string& key, void* dst) const override {
    const ZipEntry* e = zip_.find(prefix_ + key);
    FG_ASSERT(e != nullptr);  // size() was asked first
    zip_.read(*e, dst);
  }

 private:
  const ZipReader& zip_;
  std::string prefix_;
};

// An opened .pth file: the input, its zip directory and the interpreted pickle.
struct PthFile {
  std::unique_ptr<ByteSource> source;
  std::unique_ptr<ZipReader> zip;
  std::unique_ptr<ZipStorageRecords> records;
  std::unique_ptr<Unpickled> pickle;
};

PthFile open_pth(std::unique_ptr<ByteSource> source) {
  PthFile f;
  f.source = std::move(source);
  const std::string& name = f.source->name();

  // Before torch 1.6, torch.save wrote a bare pickle stream (starting with
  // the pickled magic number); say so rather than "not a zip archive".
  if (f.source->size() >= 2) {
    unsigned char head[2];
    f.source->read(0, head, 2);
    FG_CHECK(!(head[0] == 0x80 && head[1] >= 2 && head[1] <= 5), name,
             ": written in torch's legacy (pre-1.6) format, which fgmoe does not read; re-save it "
             "with torch.save in torch >= 1.6 (the zip format is the default there)");
  }
  f.zip = std::make_unique<ZipReader>(*f.source);

  std::string folder;
  for (const ZipEntry& e : f.zip->entries()) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
      FG_CHECK(folder.empty(), name, ": holds more than one data.pkl ('", printable(folder),
               "/data.pkl' and '", printable(e.name), "')");
      folder = e.name.substr(0, slash);
    }
  }
  FG_CHECK(!folder.empty(), name,
           ": a zip archive without <folder>/data.pkl, so not a file written by torch.save");
  if (const ZipEntry* order = f.zip->find(folder + "/byteorder")) {
    const std::string byte_order = order->size <= 16 ? f.zip->read_string(*order) : "?";
    FG_CHECK(byte_order == "little", name, ": tensor data is stored with byte order '",
             printable(byte_order), "'; fgmoe reads little-endian files");
  }
  const std::string pickle = f.zip->read_string(*f.zip->find(folder + "/data.pkl"));
  f.records = std::make_unique<ZipStorageRecords>(*f.zip, folder + "/data/");
  f.pickle = std::make_unique<Unpickled>(pickle, *f.records, name);
  return f;
}

StateDict load_state_dict(PthFile f) {
  Unpickled& p = *f.pickle;
  const std::string& name = f.source->name();
  const Unpickled::Ref root = p.root();
  FG_CHECK(p.is_dict(root), name, ": holds a ", p.describe(root), ", not a state dict");

  // Training checkpoints keep the state dict under one of these keys; a bare
  // state dict is the root itself (its values are tensors, never dicts).
  std::optional<Unpickled::Ref> chosen;
  std::string path;
  for (const char* key : {"model", "state_dict", "model_state"}) {
    const std::optional<Unpickled::Ref> entry = p.dict_get(root, key);
    if (entry && p.is_dict(*entry)) {
      chosen = entry;
      path = str_cat("['", key, "']");
      break;
    }
  }
  if (!chosen) chosen = root;
  return state_dict_from_value(p.to_value(*chosen, path),
                               path.empty() ? name : str_cat(name, ": ", path));
}

void save_pth_impl(const std::string& path, const Value& value, const PthSaveOptions& options) {
  std::vector<PickledStorage> storages;
  const std::string pickle = pickle_value(value, storages, path);

  AtomicFileWriter out(path);
  ZipWriter zip(out, options.force_zip64);
  const std::string folder = kArchiveFolder;
  zip.add(folder + "/data.pkl", pickle.data(), pickle.size());
  zip.add(folder + "/byteorder", "little", 6);
  for (const PickledStorage& s : storages) {
    const uint64_t nbytes = s.numel * dtype_size(s.dtype);
    const std::string record = folder + "/data/" + s.key;
    if (s.storage->device().is_cpu()) {
      zip.add(record, s.storage->data(), nbytes);
    } else {
      // One storage at a time through the host, keeping host memory bounded.
      const Tensor bytes =
          Tensor::from_storage(s.storage, {static_cast<int64_t>(nbytes)}, {1}, 0, DType::UInt8)
              .cpu();
      zip.add(record, bytes.data_ptr(), nbytes);
    }
  }
  zip.add(folder + "/version", "3\n", 2);
  zip.finish();
  out.commit();
}

}  // namespace

Value load_pth(const std::string& path) {
  PthFile f = open_pth(open_file_source(path));
  return f.pickle->to_value(f.pickle->root());
}

Value load_pth_from_memory(const void* data, size_t size, const std::string& name) {
  PthFile f = open_pth(memory_source(data, size, name));
  return f.pickle->to_value(f.pickle->root());
}

Tensor load_tensor_pth(const std::string& path) {
  PthFile f = open_pth(open_file_source(path));
  const Unpickled::Ref root = f.pickle->root();
  FG_CHECK(f.pickle->is_tensor(root), path, ": holds a ", f.pickle->describe(root),
           ", not a single tensor");
  return f.pickle->to_value(root).as_tensor();
}

StateDict load_state_dict_pth(const std::string& path) {
  return load_state_dict(open_pth(open_file_source(path)));
}

StateDict load_state_dict_pth_from_memory(const void* data, size_t size, const std::string& name) {
  return load_state_dict(open_pth(memory_source(data, size, name)));
}

void save_pth(const std::string& path, const Value& value) { save_pth_impl(path, value, {}); }

void save_pth(const std::string& path, const Value& value, const PthSaveOptions& options) {
  save_pth_impl(path, value, options);
}

void save_tensor_pth(const std::string& path, const Tensor& t) {
  FG_CHECK(t.defined(), path, ": cannot save an undefined tensor");
  save_pth_impl(path, Value(t), {});
}

void save_state_dict_pth(const std::string& path, const StateDict& state) {
  save_pth_impl(path, state_dict_to_value(state), {});
}

Value state_dict_to_value(const StateDict& state) {
  Value out = Value::ordered_dict();
  Dict& d = out.as_dict();
  for (const auto& [name, tensor] : state) {
    FG_CHECK(tensor.defined(), "state dict entry '", name, "' is an undefined tensor");
    d.set(name, Value(tensor));
  }
  return out;
}

StateDict state_dict_from_value(const Value& value, const std::string& what) {
  FG_CHECK(value.is_dict(), what, ": holds a ", value.kind_name(), ", not a state dict");
  StateDict out;
  const Dict& d = value.as_dict();
  for (size_t i = 0; i < d.size(); ++i) {
    const auto* name = std::get_if<std::string>(&d.key(i));
    FG_CHECK(name != nullptr, what, ": key ", key_repr(d.key(i)),
             " is not a str, so this is not a state dict");
    FG_CHECK(d.value(i).is_tensor(), what, ": entry '", printable(*name), "' is a ",
             d.value(i).kind_name(), ", not a tensor, so this is not a state dict",
             " (a checkpoint keeps its state dict under 'model')");
    out.insert(*name, d.value(i).as_tensor());
  }
  return out;
}

}  // namespace fg::serialize
