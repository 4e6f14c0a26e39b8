// A restricted pickle interpreter: enough of protocols 2 to 5 for what
// torch.save writes, with every length, index and stack access checked.
#include <cstring>
#include <unordered_map>

#include "engine/serialize/byte_io.h"
#include "engine/serialize/pickle.h"

namespace fg::serialize {

namespace {

// Opcodes (pickletools.py names).
enum : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  BINFLOAT = 'G',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  SHORT_BINSTRING = 'U',
  BINSTRING = 'T',
  BINUNICODE = 'X',
  SHORT_BINBYTES = 'C',
  BINBYTES = 'B',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f,
  ADDITEMS = 0x90,
  FROZENSET = 0x91,
  NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
  BYTEARRAY8 = 0x96,
};

constexpr int kHighestProtocol = 5;
// data.pkl of a state dict takes ~150 bytes per tensor; a gigabyte is far
// beyond any checkpoint and keeps object indices in 32 bits.
constexpr size_t kMaxPickleBytes = size_t{1} << 30;

enum class ObjKind : uint8_t {
  None,
  Bool,
  Int,
  Float,
  String,
  List,
  Tuple,
  Dict,
  Tensor,
  Global,   // a reference to module.name, not yet called
  Storage,  // a storage from a persistent id
  Opaque,   // anything fgmoe does not build; strings[index] says what it was
};

struct Obj {
  ObjKind kind = ObjKind::None;
  bool flag = false;   // Bool: the value; Dict: made as a collections.OrderedDict
  uint32_t index = 0;  // into strings (String, Global, Opaque), sequences (List,
                       // Tuple, Dict: keys and values alternating), tensors, storages
  int64_t int_value = 0;
  double float_value = 0;
};

struct StorageRec {
  std::string key;
  DType dtype;
  uint64_t numel;
  std::shared_ptr<Storage> loaded;  // read on first use
};

struct TensorRec {
  uint32_t storage;  // into storages
  int64_t offset;
  Shape shape;
  Shape strides;
  Tensor built;
};

// torch.<Name>Storage classes of the dtypes fgmoe has.
std::optional<DType> storage_class_dtype(const std::string& name) {
  static const std::pair<const char*, DType> table[] = {
      {"torch.FloatStorage", DType::Float32}, {"torch.DoubleStorage", DType::Float64},
      {"torch.HalfStorage", DType::Float16},  {"torch.BFloat16Storage", DType::BFloat16},
      {"torch.LongStorage", DType::Int64},    {"torch.IntStorage", DType::Int32},
      {"torch.ByteStorage", DType::UInt8},    {"torch.BoolStorage", DType::Bool},
  };
  for (const auto& [class_name, dtype] : table) {
    if (name == class_name) return dtype;
  }
  return std::nullopt;
}

const char* opcode_name(uint8_t op) {
  switch (op) {
    case 'I': return "INT (protocol 0)";
    case 'L': return "LONG (protocol 0)";
    case 'F': return "FLOAT (protocol 0)";
    case 'S': return "STRING (protocol 0)";
    case 'V': return "UNICODE (protocol 0)";
    case 'g': return "GET (protocol 0)";
    case 'p': return "PUT (protocol 0)";
    case 'P': return "PERSID (protocol 0)";
    case 'i': return "INST (protocol 0)";
    case 'o': return "OBJ (protocol 1)";
    case 0x82:
    case 0x83:
    case 0x84: return "EXT (extension registry)";
    case 0x97: return "NEXT_BUFFER (out-of-band data)";
    case 0x98: return "READONLY_BUFFER (out-of-band data)";
    default: return "unknown opcode";
  }
}

}  // namespace

struct Unpickled::Impl {
  Impl(std::string_view pickle, const StorageRecords& records, std::string source)
      : source(std::move(source)), records(records), data(pickle) {}

  std::string source;
  const StorageRecords& records;
  std::string_view data;
  size_t pos = 0;
  size_t opcodes = 0;

  std::vector<Obj> objs;
  std::vector<std::string> strings;
  std::vector<std::vector<Ref>> sequences;
  std::vector<TensorRec> tensors;
  std::vector<StorageRec> storages;
  std::unordered_map<std::string, Ref> storage_by_key;  // the Storage object per key

  std::vector<Ref> stack;
  std::vector<size_t> marks;  // stack heights at each MARK
  std::unordered_map<uint32_t, Ref> memo;
  Ref root = 0;

  // Conversion to Value: tensors already built, and a budget against object
  // graphs that share containers to expand exponentially.
  size_t converted = 0;
  size_t conversion_budget = 0;

  static constexpr Ref kNone = 0, kFalse = 1, kTrue = 2;

  // ---------------------------------------------------------------- errors

  template <class... Parts>
  [[noreturn]] void fail(const Parts&... parts) const {
    throw_error(__FILE__, __LINE__,
                str_cat(source, ": corrupt or unsupported pickle (data.pkl, byte ", pos, "): ",
                        parts...));
  }

  // ---------------------------------------------------------------- objects

  Ref add(Obj obj) {
    objs.push_back(obj);
    return static_cast<Ref>(objs.size() - 1);
  }
  Ref add_string(ObjKind kind, std::string text) {
    strings.push_back(std::move(text));
    return add({kind, false, static_cast<uint32_t>(strings.size() - 1), 0, 0});
  }
  Ref add_sequence(ObjKind kind, std::vector<Ref> items, bool ordered = false) {
    sequences.push_back(std::move(items));
    return add({kind, ordered, static_cast<uint32_t>(sequences.size() - 1), 0, 0});
  }
  Ref add_int(int64_t v) { return add({ObjKind::Int, false, 0, v, 0}); }
  Ref add_opaque(std::string what) { return add_string(ObjKind::Opaque, std::move(what)); }

  const Obj& obj(Ref ref) const { return objs[ref]; }
  ObjKind kind(Ref ref) const { return objs[ref].kind; }
  const std::string& text(Ref ref) const { return strings[objs[ref].index]; }
  std::vector<Ref>& items(Ref ref) { return sequences[objs[ref].index]; }
  const std::vector<Ref>& items(Ref ref) const { return sequences[objs[ref].index]; }

  std::string describe(Ref ref) const {
    switch (kind(ref)) {
      case ObjKind::None: return "None";
      case ObjKind::Bool: return "bool";
      case ObjKind::Int: return "int";
      case ObjKind::Float: return "float";
      case ObjKind::String: return "str";
      case ObjKind::List: return "list";
      case ObjKind::Tuple: return "tuple";
      case ObjKind::Dict: return obj(ref).flag ? "OrderedDict" : "dict";
      case ObjKind::Tensor: return "Tensor";
      case ObjKind::Global: return str_cat("reference to global ", printable(text(ref)));
      case ObjKind::Storage: return "bare storage";
      case ObjKind::Opaque: return text(ref);
    }
    return "?";
  }

  // ---------------------------------------------------------------- reading

  size_t remaining() const { return data.size() - pos; }
  const unsigned char* take(size_t n) {
    if (remaining() < n) fail("truncated: needs ", n, " more bytes, has ", remaining());
    const auto* p = reinterpret_cast<const unsigned char*>(data.data() + pos);
    pos += n;
    return p;
  }
  uint8_t u8() { return *take(1); }
  uint16_t u16() { return load_le16(take(2)); }
  uint32_t u32() { return load_le32(take(4)); }
  uint64_t u64() { return load_le64(take(8)); }
  std::string bytes(uint64_t n) {
    if (remaining() < n) fail("truncated: a length of ", n, " runs past the end (", remaining(),
                              " bytes left)");
    const auto* p = take(static_cast<size_t>(n));
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  std::string line() {
    const size_t end = data.find('\n', pos);
    if (end == std::string_view::npos) fail("truncated: GLOBAL name without a newline");
    std::string out(data.substr(pos, end - pos));
    pos = end + 1;
    return out;
  }

  // ---------------------------------------------------------------- stack

  size_t frame_base() const { return marks.empty() ? 0 : marks.back(); }
  Ref pop() {
    if (stack.size() <= frame_base()) fail("stack underflow");
    const Ref r = stack.back();
    stack.pop_back();
    return r;
  }
  Ref top() const {
    if (stack.size() <= frame_base()) fail("stack underflow");
    return stack.back();
  }
  std::vector<Ref> pop_mark() {
    if (marks.empty()) fail("no MARK to pop to");
    const size_t base = marks.back();
    marks.pop_back();
    std::vector<Ref> items(stack.begin() + static_cast<std::ptrdiff_t>(base), stack.end());
    stack.resize(base);
    return items;
  }
  void push(Ref r) { stack.push_back(r); }
  Ref memo_get(uint32_t index) const {
    auto it = memo.find(index);
    if (it == memo.end()) fail("memo entry ", index, " read before it was written");
    return it->second;
  }

  // Two's complement little-endian, as LONG1/LONG4 store ints.
  Ref decode_long(const std::string& b) {
    if (b.empty()) return add_int(0);
    const bool negative = static_cast<unsigned char>(b.back()) & 0x80;
    // Bytes beyond the eighth must only repeat the sign.
    for (size_t i = 8; i < b.size(); ++i) {
      if (static_cast<unsigned char>(b[i]) != (negative ? 0xff : 0x00)) {
        return add_opaque("an int beyond 64 bits");
      }
    }
    uint64_t u = negative ? ~uint64_t{0} : 0;
    for (size_t i = 0; i < std::min<size_t>(b.size(), 8); ++i) {
      u &= ~(uint64_t{0xff} << (8 * i));
      u |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
    }
    if (b.size() >= 8 && ((u >> 63) != 0) != negative) return add_opaque("an int beyond 64 bits");
    int64_t v;
    std::memcpy(&v, &u, 8);
    return add_int(v);
  }

  // ---------------------------------------------------------------- calls

  // REDUCE / NEWOBJ: only the callables tensors and state dicts need are
  // understood; any other call becomes an opaque placeholder naming it.
  Ref call(Ref callable, Ref args) {
    if (kind(callable) == ObjKind::Opaque) return callable;
    if (kind(callable) != ObjKind::Global) fail("call of a ", describe(callable), ", not a global");
    if (kind(args) != ObjKind::Tuple) fail("call of ", text(callable), " with a ", describe(args),
                                           " as arguments, not a tuple");
    const std::string& name = text(callable);
    const std::vector<Ref> a = items(args);
    if (name == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict called with arguments (torch.save passes none)");
      return add_sequence(ObjKind::Dict, {}, /*ordered=*/true);
    }
    if (name == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(a);
    if (name == "torch._utils._rebuild_parameter" ||
        name == "torch._utils._rebuild_parameter_with_state") {
      const size_t expected = name == "torch._utils._rebuild_parameter" ? 3 : 4;
      if (a.size() != expected) fail(name, " with ", a.size(), " arguments, expected ", expected);
      if (kind(a[0]) != ObjKind::Tensor && kind(a[0]) != ObjKind::Opaque) {
        fail(name, " of a ", describe(a[0]), ", not a tensor");
      }
      return a[0];  // a parameter loads as its data
    }
    if (name == "torch.Size") {
      if (a.size() != 1 || kind(a[0]) != ObjKind::Tuple) fail("torch.Size without a tuple");
      return a[0];
    }
    return add_opaque(str_cat("an object made by global '", printable(name), "'"));
  }

  // torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
  // requires_grad, backward_hooks[, metadata])
  Ref rebuild_tensor(const std::vector<Ref>& a) {
    if (a.size() != 6 && a.size() != 7) {
      fail("_rebuild_tensor_v2 with ", a.size(), " arguments, expected 6 or 7");
    }
    if (kind(a[0]) == ObjKind::Opaque) return a[0];  // e.g. a storage of an unsupported dtype
    if (kind(a[0]) != ObjKind::Storage) fail("_rebuild_tensor_v2 of a ", describe(a[0]));
    const StorageRec& storage = storages[obj(a[0]).index];
    if (kind(a[1]) != ObjKind::Int || obj(a[1]).int_value < 0) {
      fail("tensor storage offset is not a non-negative int");
    }
    auto int_tuple = [&](Ref r, const char* what) {
      if (kind(r) != ObjKind::Tuple) fail("tensor ", what, " is a ", describe(r), ", not a tuple");
      Shape out;
      for (Ref x : items(r)) {
        if (kind(x) != ObjKind::Int || obj(x).int_value < 0) {
          fail("tensor ", what, " holds something other than a non-negative int");
        }
        out.push_back(obj(x).int_value);
      }
      return out;
    };
    TensorRec t{obj(a[0]).index, obj(a[1]).int_value, int_tuple(a[2], "size"),
                int_tuple(a[3], "stride"), Tensor()};
    if (t.shape.size() != t.strides.size()) {
      fail("tensor size ", shape_str(t.shape), " and stride ", shape_str(t.strides),
           " differ in length");
    }
    if (kind(a[4]) != ObjKind::Bool) fail("tensor requires_grad is not a bool");
    if (kind(a[5]) != ObjKind::Dict) fail("tensor backward_hooks is not a dict");
    // The view must lie inside its storage; computed without overflow.
    int64_t numel = 1;
    int64_t last = t.offset;
    for (size_t i = 0; i < t.shape.size(); ++i) {
      int64_t reach;
      if (__builtin_mul_overflow(numel, t.shape[i], &numel) ||
          (t.shape[i] > 0 && (__builtin_mul_overflow(t.shape[i] - 1, t.strides[i], &reach) ||
                              __builtin_add_overflow(last, reach, &last)))) {
        fail("tensor of size ", shape_str(t.shape), " and stride ", shape_str(t.strides),
             " overflows 64 bits");
      }
    }
    const uint64_t storage_numel = storage.numel;
    if (numel > 0 ? static_cast<uint64_t>(last) >= storage_numel
                  : static_cast<uint64_t>(t.offset) > storage_numel) {
      fail("tensor of size ", shape_str(t.shape), ", stride ", shape_str(t.strides), " at offset ",
           t.offset, " reaches past the end of storage '", printable(storage.key), "' of ",
           storage_numel, " elements");
    }
    tensors.push_back(std::move(t));
    return add({ObjKind::Tensor, false, static_cast<uint32_t>(tensors.size() - 1), 0, 0});
  }

  // ('storage', storage_class, key, location, numel)
  Ref persistent_load(Ref pid) {
    if (kind(pid) != ObjKind::Tuple) fail("persistent id is a ", describe(pid), ", not a tuple");
    const std::vector<Ref>& p = items(pid);
    if (p.size() != 5 || kind(p[0]) != ObjKind::String || text(p[0]) != "storage") {
      fail("persistent id is not ('storage', type, key, location, numel)");
    }
    if (kind(p[1]) != ObjKind::Global) fail("persistent id storage type is not a global");
    if (kind(p[2]) != ObjKind::String) fail("persistent id key is not a str");
    if (kind(p[3]) != ObjKind::String) fail("persistent id location is not a str");
    if (kind(p[4]) != ObjKind::Int || obj(p[4]).int_value < 0) {
      fail("persistent id numel is not a non-negative int");
    }
    // Copies: adding objects below may move the string table.
    const std::string class_name = text(p[1]);
    const std::string key = text(p[2]);
    const auto numel = static_cast<uint64_t>(obj(p[4]).int_value);
    const std::optional<DType> dtype = storage_class_dtype(class_name);
    if (!dtype) {
      return add_opaque(str_cat("a tensor stored as ", printable(class_name),
                                ", a dtype fgmoe does not support"));
    }
    if (auto it = storage_by_key.find(key); it != storage_by_key.end()) {
      const StorageRec& seen = storages[obj(it->second).index];
      if (seen.dtype != *dtype || seen.numel != numel) {
        fail("storage '", printable(key), "' is declared twice with different types or sizes");
      }
      return it->second;
    }
    const std::optional<uint64_t> record_size = records.size(key);
    if (!record_size) fail("storage record 'data/", printable(key), "' is missing from the archive");
    const uint64_t element_size = dtype_size(*dtype);
    if (numel > *record_size / element_size || numel * element_size != *record_size) {
      fail("storage '", printable(key), "' declares ", numel, " elements of ", element_size,
           " bytes, but its record holds ", *record_size, " bytes");
    }
    storages.push_back({key, *dtype, numel, nullptr});
    const Ref ref = add({ObjKind::Storage, false, static_cast<uint32_t>(storages.size() - 1), 0, 0});
    storage_by_key.emplace(key, ref);
    return ref;
  }

  // ---------------------------------------------------------------- interpreter

  void run() {
    if (data.size() > kMaxPickleBytes) fail("data.pkl of ", data.size(), " bytes is implausibly large");
    objs.reserve(64);
    add({ObjKind::None, false, 0, 0, 0});
    add({ObjKind::Bool, false, 0, 0, 0});
    add({ObjKind::Bool, true, 0, 0, 0});
    for (;;) {
      if (pos >= data.size()) fail("ends without a STOP opcode (truncated?)");
      ++opcodes;
      const uint8_t op = u8();
      switch (op) {
        case PROTO: {
          const uint8_t version = u8();
          if (version > kHighestProtocol) fail("pickle protocol ", int(version), " is not supported");
          break;
        }
        case FRAME:
          if (u64() > remaining()) fail("FRAME longer than the data");
          break;
        case STOP:
          root = pop();
          return;
        case MARK: marks.push_back(stack.size()); break;
        case POP:
          // As Python's unpickler: an empty frame makes POP drop the mark.
          if (stack.size() > frame_base()) {
            stack.pop_back();
          } else {
            pop_mark();
          }
          break;
        case POP_MARK: pop_mark(); break;
        case DUP: push(top()); break;
        case NONE: push(kNone); break;
        case NEWTRUE: push(kTrue); break;
        case NEWFALSE: push(kFalse); break;
        case BININT: {
          const uint32_t u = u32();
          int32_t v;
          std::memcpy(&v, &u, 4);
          push(add_int(v));
          break;
        }
        case BININT1: push(add_int(u8())); break;
        case BININT2: push(add_int(u16())); break;
        case LONG1: push(decode_long(bytes(u8()))); break;
        case LONG4: {
          const uint32_t n = u32();
          if (n & 0x80000000u) fail("LONG4 with a negative length");
          push(decode_long(bytes(n)));
          break;
        }
        case BINFLOAT: {
          const unsigned char* p = take(8);
          uint64_t u = 0;
          for (int i = 0; i < 8; ++i) u = u << 8 | p[i];  // big-endian
          double v;
          std::memcpy(&v, &u, 8);
          push(add({ObjKind::Float, false, 0, 0, v}));
          break;
        }
        case SHORT_BINUNICODE: push(add_string(ObjKind::String, bytes(u8()))); break;
        case BINUNICODE: push(add_string(ObjKind::String, bytes(u32()))); break;
        case BINUNICODE8: push(add_string(ObjKind::String, bytes(u64()))); break;
        case SHORT_BINBYTES: bytes(u8()), push(add_opaque("a bytes object")); break;
        case BINBYTES: bytes(u32()), push(add_opaque("a bytes object")); break;
        case BINBYTES8: bytes(u64()), push(add_opaque("a bytes object")); break;
        case BYTEARRAY8: bytes(u64()), push(add_opaque("a bytearray")); break;
        case SHORT_BINSTRING: bytes(u8()), push(add_opaque("a Python 2 str")); break;
        case BINSTRING: {
          const uint32_t n = u32();
          if (n & 0x80000000u) fail("BINSTRING with a negative length");
          bytes(n);
          push(add_opaque("a Python 2 str"));
          break;
        }
        case EMPTY_TUPLE: push(add_sequence(ObjKind::Tuple, {})); break;
        case TUPLE: push(add_sequence(ObjKind::Tuple, pop_mark())); break;
        case TUPLE1: {
          const Ref a = pop();
          push(add_sequence(ObjKind::Tuple, {a}));
          break;
        }
        case TUPLE2: {
          const Ref b = pop(), a = pop();
          push(add_sequence(ObjKind::Tuple, {a, b}));
          break;
        }
        case TUPLE3: {
          const Ref c = pop(), b = pop(), a = pop();
          push(add_sequence(ObjKind::Tuple, {a, b, c}));
          break;
        }
        case EMPTY_LIST: push(add_sequence(ObjKind::List, {})); break;
        case LIST: push(add_sequence(ObjKind::List, pop_mark())); break;
        case APPEND: {
          const Ref v = pop();
          append(top(), {v});
          break;
        }
        case APPENDS: {
          std::vector<Ref> values = pop_mark();
          append(top(), values);
          break;
        }
        case EMPTY_DICT: push(add_sequence(ObjKind::Dict, {})); break;
        case DICT: {
          std::vector<Ref> kv = pop_mark();
          if (kv.size() % 2) fail("DICT with an odd number of items");
          push(add_sequence(ObjKind::Dict, std::move(kv)));
          break;
        }
        case SETITEM: {
          const Ref v = pop(), k = pop();
          set_items(top(), {k, v});
          break;
        }
        case SETITEMS: {
          std::vector<Ref> kv = pop_mark();
          if (kv.size() % 2) fail("SETITEMS with an odd number of items");
          set_items(top(), kv);
          break;
        }
        case EMPTY_SET: push(add_opaque("a set")); break;
        case ADDITEMS: {
          pop_mark();
          if (kind(top()) != ObjKind::Opaque) fail("ADDITEMS on a ", describe(top()));
          break;
        }
        case FROZENSET:
          pop_mark();
          push(add_opaque("a frozenset"));
          break;
        case GLOBAL: {
          std::string module = line();
          std::string name = line();
          push(add_string(ObjKind::Global, module + "." + name));
          break;
        }
        case STACK_GLOBAL: {
          const Ref name = pop(), module = pop();
          if (kind(name) != ObjKind::String || kind(module) != ObjKind::String) {
            fail("STACK_GLOBAL of non-strings");
          }
          push(add_string(ObjKind::Global, text(module) + "." + text(name)));
          break;
        }
        case REDUCE:
        case NEWOBJ: {
          const Ref args = pop(), callable = pop();
          push(call(callable, args));
          break;
        }
        case NEWOBJ_EX: {
          const Ref kwargs = pop(), args = pop(), cls = pop();
          if (kind(kwargs) != ObjKind::Dict || !items(kwargs).empty()) {
            push(kind(cls) == ObjKind::Opaque
                     ? cls
                     : add_opaque(str_cat("an object made by ", describe(cls))));
          } else {
            push(call(cls, args));
          }
          break;
        }
        case BUILD: {
          const Ref state = pop();
          const Ref target = top();
          (void)state;
          // An OrderedDict's state is its attributes (a state dict's
          // _metadata: module versions fgmoe does not need).
          if (kind(target) != ObjKind::Dict && kind(target) != ObjKind::Opaque) {
            fail("BUILD on a ", describe(target));
          }
          break;
        }
        case BINPERSID: push(persistent_load(pop())); break;
        case BINGET: push(memo_get(u8())); break;
        case LONG_BINGET: push(memo_get(u32())); break;
        case BINPUT: {
          const uint32_t index = u8();
          memo[index] = top();
          break;
        }
        case LONG_BINPUT: {
          const uint32_t index = u32();
          memo[index] = top();
          break;
        }
        case MEMOIZE: memo[static_cast<uint32_t>(memo.size())] = top(); break;
        default: {
          static const char* hex = "0123456789abcdef";
          const char code[3] = {hex[op >> 4], hex[op & 15], 0};
          --pos;
          fail("opcode 0x", code, " (", opcode_name(op),
               ") is not supported; fgmoe reads protocols 2 to 5 as torch.save writes them");
        }
      }
    }
  }

  void append(Ref target, const std::vector<Ref>& values) {
    if (kind(target) == ObjKind::Opaque) return;  // e.g. a list subclass fgmoe does not build
    if (kind(target) != ObjKind::List) fail("APPEND to a ", describe(target));
    auto& list = items(target);
    list.insert(list.end(), values.begin(), values.end());
  }

  void set_items(Ref target, const std::vector<Ref>& kv) {
    if (kind(target) == ObjKind::Opaque) return;  // e.g. a config dict subclass
    if (kind(target) != ObjKind::Dict) fail("SETITEM on a ", describe(target));
    auto& d = items(target);
    d.insert(d.end(), kv.begin(), kv.end());
  }

  // ---------------------------------------------------------------- conversion

  template <class... Parts>
  [[noreturn]] void fail_at(const std::vector<std::string>& path, const Parts&... parts) const {
    std::string where;
    for (const auto& p : path) where += p;
    throw_error(__FILE__, __LINE__,
                str_cat(source, ": ", where.empty() ? "the saved object" : where, ": ", parts...));
  }

  const std::shared_ptr<Storage>& load_storage(StorageRec& s) {
    if (!s.loaded) {
      auto storage = std::make_shared<Storage>(s.numel * dtype_size(s.dtype), kCPU);
      records.read(s.key, storage->data());
      s.loaded = std::move(storage);
    }
    return s.loaded;
  }

  Value convert(Ref ref, int depth, std::vector<std::string>& path) {
    if (depth > kMaxNesting) fail_at(path, "nested more than ", kMaxNesting, " levels deep");
    if (++converted > conversion_budget) {
      fail_at(path, "the pickle's shared objects expand to more than ", conversion_budget,
              " values");
    }
    const Obj& o = obj(ref);
    switch (o.kind) {
      case ObjKind::None: return Value();
      case ObjKind::Bool: return Value(o.flag);
      case ObjKind::Int: return Value(o.int_value);
      case ObjKind::Float: return Value(o.float_value);
      case ObjKind::String: return Value(text(ref));
      case ObjKind::List:
      case ObjKind::Tuple: {
        std::vector<Value> out;
        const std::vector<Ref>& refs = items(ref);  // conversion adds no objects
        out.reserve(refs.size());
        for (size_t i = 0; i < refs.size(); ++i) {
          path.push_back(str_cat("[", i, "]"));
          out.push_back(convert(refs[i], depth + 1, path));
          path.pop_back();
        }
        return o.kind == ObjKind::List ? Value::list(std::move(out)) : Value::tuple(std::move(out));
      }
      case ObjKind::Dict: {
        Dict out(o.flag);
        const std::vector<Ref>& kv = items(ref);
        for (size_t i = 0; i + 1 < kv.size(); i += 2) {
          DictKey key;
          if (kind(kv[i]) == ObjKind::String) {
            key = text(kv[i]);
          } else if (kind(kv[i]) == ObjKind::Int) {
            key = obj(kv[i]).int_value;
          } else {
            fail_at(path, "a dict key is a ", describe(kv[i]), "; fgmoe supports str and int keys");
          }
          path.push_back(str_cat("[", printable(key_repr(key)), "]"));
          out.set(key, convert(kv[i + 1], depth + 1, path));
          path.pop_back();
        }
        return Value(std::move(out));
      }
      case ObjKind::Tensor: {
        TensorRec& t = tensors[o.index];
        if (!t.built.defined()) {
          StorageRec& s = storages[t.storage];
          t.built = Tensor::from_storage(load_storage(s), t.shape, t.strides, t.offset, s.dtype);
        }
        return Value(t.built);
      }
      case ObjKind::Global:
      case ObjKind::Storage:
      case ObjKind::Opaque:
        fail_at(path, "holds ", describe(ref),
                ", which fgmoe does not load (it loads tensors, dicts, lists, tuples, str, int, "
                "float, bool and None, as torch.load(weights_only=True) does)");
    }
    fail_at(path, "internal error: unknown object");
  }
};

Unpickled::Unpickled(std::string_view pickle, const StorageRecords& records, std::string source)
    : impl_(std::make_unique<Impl>(pickle, records, std::move(source))) {
  impl_->run();
  // Every value of an honest pickle comes from at least one opcode; sharing
  // may repeat a few, but not by orders of magnitude.
  impl_->conversion_budget = 4 * impl_->opcodes + 4096;
}

Unpickled::~Unpickled() = default;

Unpickled::Ref Unpickled::root() const { return impl_->root; }
bool Unpickled::is_dict(Ref ref) const { return impl_->kind(ref) == ObjKind::Dict; }
bool Unpickled::is_tensor(Ref ref) const { return impl_->kind(ref) == ObjKind::Tensor; }
std::string Unpickled::describe(Ref ref) const { return impl_->describe(ref); }

std::optional<Unpickled::Ref> Unpickled::dict_get(Ref dict, std::string_view key) const {
  if (!is_dict(dict)) return std::nullopt;
  const auto& kv = impl_->items(dict);
  std::optional<Ref> found;
  for (size_t i = 0; i + 1 < kv.size(); i += 2) {  // the last assignment wins, as in Python
    if (impl_->kind(kv[i]) == ObjKind::String && impl_->text(kv[i]) == key) found = kv[i + 1];
  }
  return found;
}

Value Unpickled::to_value(Ref ref, const std::string& path) {
  std::vector<std::string> where;
  if (!path.empty()) where.push_back(path);
  return impl_->convert(ref, 0, where);
}

}  // namespace fg::serialize
