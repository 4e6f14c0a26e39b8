// Writes data.pkl as torch.save's pickler does (protocol 2), so that
// torch.load (including weights_only=True) reads fgmoe's files.
#include <climits>
#include <cstring>
#include <unordered_map>

#include "engine/serialize/byte_io.h"
#include "engine/serialize/pickle.h"

namespace fg::serialize {

namespace {

// The legacy storage classes torch.save names for each dtype.
const char* storage_class(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "FloatStorage";
    case DType::Float64: return "DoubleStorage";
    case DType::Float16: return "HalfStorage";
    case DType::BFloat16: return "BFloat16Storage";
    case DType::Int64: return "LongStorage";
    case DType::Int32: return "IntStorage";
    case DType::UInt8: return "ByteStorage";
    case DType::Bool: return "BoolStorage";
  }
  return nullptr;
}

// Python decodes pickled str as UTF-8 (allowing lone surrogates), so anything
// else would make torch.load fail; reject it when saving instead.
bool valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (p[i + k] & 0x3f);
    }
    static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10ffff) return false;  // overlong or out of range
    i += len;
  }
  return true;
}

class Pickler {
 public:
  Pickler(std::vector<PickledStorage>& storages, const std::string& target)
      : storages_(storages), target_(target) {}

  std::string run(const Value& value) {
    out_ += '\x80';  // PROTO 2, torch.save's default
    out_ += '\x02';
    path_.clear();
    save(value, 0);
    out_ += '.';  // STOP
    return std::move(out_);
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    std::string where;
    for (const auto& p : path_) where += p;
    throw_error(__FILE__, __LINE__,
                str_cat(target_, ": cannot save ", where.empty() ? "the value" : where, ": ",
                        parts...));
  }

  void op(char code) { out_ += code; }
  void op(unsigned char code) { out_ += static_cast<char>(code); }

  void save_int(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');  // BININT1
      out_ += static_cast<char>(v);
    } else if (v >= 0 && v < 65536) {
      op('M');  // BININT2
      append_le16(out_, static_cast<uint16_t>(v));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');  // BININT
      append_le32(out_, static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      // LONG1: the shortest two's complement little-endian form.
      uint64_t u;
      std::memcpy(&u, &v, 8);
      unsigned char b[8];
      for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(u >> (8 * i));
      int n = 8;
      while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) ||
                       (b[n - 1] == 0xff && (b[n - 2] & 0x80)))) {
        --n;
      }
      op(static_cast<unsigned char>(0x8a));
      out_ += static_cast<char>(n);
      out_.append(reinterpret_cast<const char*>(b), static_cast<size_t>(n));
    }
  }

  void save_float(double v) {
    op('G');  // BINFLOAT, big-endian
    uint64_t u;
    std::memcpy(&u, &v, 8);
    for (int i = 7; i >= 0; --i) out_ += static_cast<char>((u >> (8 * i)) & 0xff);
  }

  void save_string(const std::string& s) {
    if (!valid_utf8(s)) fail("a str that is not valid UTF-8: '", printable(s), "'");
    if (s.size() > UINT32_MAX) fail("a str longer than 4 GiB");
    op('X');  // BINUNICODE
    append_le32(out_, static_cast<uint32_t>(s.size()));
    out_ += s;
  }

  void save_global(const char* module, const char* name) {
    op('c');
    out_ += module;
    out_ += '\n';
    out_ += name;
    out_ += '\n';
  }

  void save_empty_ordered_dict() {
    save_global("collections", "OrderedDict");
    op(')');  // EMPTY_TUPLE
    op('R');  // REDUCE
  }

  void save_int_tuple(const Shape& values) {
    if (values.empty()) {
      op(')');
      return;
    }
    if (values.size() > 3) op('(');
    for (int64_t v : values) save_int(v);
    static const unsigned char small_tuple[] = {0, 0x85, 0x86, 0x87};
    op(values.size() > 3 ? static_cast<unsigned char>('t') : small_tuple[values.size()]);
  }

  void save_tensor(const Tensor& t) {
    const std::shared_ptr<Storage>& storage = t.storage();
    const DType dtype = t.dtype();
    auto [it, inserted] = storage_keys_.emplace(storage.get(), storages_.size());
    if (inserted) {
      storages_.push_back({std::to_string(storages_.size()), storage, dtype,
                           storage->nbytes() / dtype_size(dtype)});
    } else if (storages_[it->second].dtype != dtype) {
      fail("tensors that view one storage as different dtypes (", dtype_name(dtype), " and ",
           dtype_name(storages_[it->second].dtype), ") cannot be saved; torch cannot load them");
    }
    const PickledStorage& s = storages_[it->second];

    save_global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');  // the persistent id ('storage', class, key, location, numel)
    save_string("storage");
    save_global("torch", storage_class(dtype));
    save_string(s.key);
    // Always "cpu": the file then loads anywhere, as fgmoe writes host copies.
    save_string("cpu");
    save_int(static_cast<int64_t>(s.numel));
    op('t');
    op('Q');  // BINPERSID
    save_int(t.offset());
    save_int_tuple(t.shape());
    save_int_tuple(t.strides());
    op(static_cast<unsigned char>(0x89));  // requires_grad=False: files hold data, not graphs
    save_empty_ordered_dict();              // backward_hooks
    op('t');
    op('R');
  }

  // Python batches APPENDS/SETITEMS by 1000 items; so does fgmoe.
  static constexpr size_t kBatch = 1000;

  void save(const Value& v, int depth) {
    if (depth > kMaxNesting) fail("nested more than ", kMaxNesting, " levels deep");
    switch (v.kind()) {
      case Value::Kind::None: op('N'); break;
      case Value::Kind::Bool: op(static_cast<unsigned char>(v.as_bool() ? 0x88 : 0x89)); break;
      case Value::Kind::Int: save_int(v.as_int()); break;
      case Value::Kind::Float: save_float(v.as_float()); break;
      case Value::Kind::String: save_string(v.as_string()); break;
      case Value::Kind::Tensor: save_tensor(v.as_tensor()); break;
      case Value::Kind::Tuple: {
        const auto& items = v.items();
        if (items.empty()) {
          op(')');
          break;
        }
        op('(');
        for (size_t i = 0; i < items.size(); ++i) save_child(items[i], str_cat("[", i, "]"), depth);
        op('t');
        break;
      }
      case Value::Kind::List: {
        const auto& items = v.items();
        op(']');  // EMPTY_LIST
        for (size_t start = 0; start < items.size(); start += kBatch) {
          const size_t end = std::min(items.size(), start + kBatch);
          if (end - start > 1) op('(');
          for (size_t i = start; i < end; ++i) save_child(items[i], str_cat("[", i, "]"), depth);
          op(end - start > 1 ? 'e' : 'a');  // APPENDS / APPEND
        }
        break;
      }
      case Value::Kind::Dict: {
        const Dict& d = v.as_dict();
        if (d.ordered()) {
          save_empty_ordered_dict();
        } else {
          op('}');  // EMPTY_DICT
        }
        for (size_t start = 0; start < d.size(); start += kBatch) {
          const size_t end = std::min(d.size(), start + kBatch);
          if (end - start > 1) op('(');
          for (size_t i = start; i < end; ++i) {
            const DictKey& key = d.key(i);
            if (const auto* k = std::get_if<int64_t>(&key)) {
              save_int(*k);
            } else {
              save_string(std::get<std::string>(key));
            }
            save_child(d.value(i), str_cat("[", printable(key_repr(key)), "]"), depth);
          }
          op(end - start > 1 ? 'u' : 's');  // SETITEMS / SETITEM
        }
        break;
      }
    }
  }

  void save_child(const Value& v, std::string step, int depth) {
    path_.push_back(std::move(step));
    save(v, depth + 1);
    path_.pop_back();
  }

  std::vector<PickledStorage>& storages_;
  const std::string& target_;
  std::unordered_map<const Storage*, size_t> storage_keys_;
  std::vector<std::string> path_;
  std::string out_;
};

}  // namespace

std::string pickle_value(const Value& value, std::vector<PickledStorage>& storages,
                         const std::string& target) {
  return Pickler(storages, target).run(value);
}

}  // namespace fg::serialize
