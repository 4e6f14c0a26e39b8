"""Interoperability of fgmoe's .pth and safetensors IO with real PyTorch.

Run by ctest, one case per test:
    interop_torch.py --tool <pth_tool> --case <name>
Files are generated at run time in a temporary directory. Exit code 77 means
"skipped" (no torch in this Python).
"""

import argparse
import collections
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

try:
    import torch
except ImportError:  # the oracle is missing, not the code under test
    print("torch is not installed in", sys.executable)
    sys.exit(77)

TORCH_MAJOR = int(torch.__version__.split(".")[0])

ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16,
              torch.int64, torch.int32, torch.uint8, torch.bool]


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


class Tool:
    def __init__(self, path, workdir):
        self.path = path
        self.workdir = workdir
        self.counter = 0

    def file(self, name):
        return os.path.join(self.workdir, name)

    def run(self, *args, expect_error=False):
        proc = subprocess.run([self.path, *args], capture_output=True, text=True)
        if proc.returncode not in (0, 3):
            raise AssertionError(f"pth_tool {args} exited {proc.returncode}: {proc.stderr}")
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        if expect_error:
            assert proc.returncode == 3, f"pth_tool {args} should have failed, gave {proc.stdout[:300]}"
            return out["error"]
        assert proc.returncode == 0, f"pth_tool {args} failed: {out}"
        return out

    def write(self, command, obj, target, *extra):
        self.counter += 1
        spec_path = self.file(f"spec{self.counter}.json")
        with open(spec_path, "w") as f:
            json.dump(to_spec(obj), f)
        self.run(command, spec_path, target, *extra)


# ---------------------------------------------------------------- storages

def storage_of(t):
    return t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()


def storage_ptr(t):
    return storage_of(t).data_ptr()


def storage_numel(t):
    return storage_of(t).nbytes() // t.element_size()


def storage_values(t):
    """The whole storage's elements as Python numbers."""
    flat = torch.empty(0, dtype=t.dtype)
    flat.set_(t.storage() if TORCH_MAJOR < 2 else t.untyped_storage(), 0, (storage_numel(t),), (1,))
    return flat.tolist()


def encode_number(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def decode_number(x):
    if isinstance(x, str):
        return float(x)
    return x


# ---------------------------------------------------------------- spec (Python -> pth_tool write)

def to_spec(obj):
    storages = {}
    keys = {}

    def enc(x):
        if isinstance(x, torch.Tensor):
            ptr = storage_ptr(x)
            if ptr not in keys:
                keys[ptr] = str(len(keys))
                storages[keys[ptr]] = {"dtype": dtype_name(x.dtype),
                                       "values": [encode_number(v) for v in storage_values(x)]}
            return {"tensor": {"storage": keys[ptr], "shape": list(x.shape),
                               "strides": list(x.stride()), "offset": x.storage_offset()}}
        if x is None or isinstance(x, (bool, int)):
            return x
        if isinstance(x, float):
            return {"float": repr(x)}
        if isinstance(x, str):
            return {"str": x}
        if isinstance(x, list):
            return {"list": [enc(v) for v in x]}
        if isinstance(x, tuple):
            return {"tuple": [enc(v) for v in x]}
        if isinstance(x, dict):
            return {"dict": [[k, enc(v)] for k, v in x.items()],
                    "ordered": isinstance(x, collections.OrderedDict)}
        raise TypeError(f"cannot encode {type(x)}")

    value = enc(obj)
    return {"storages": storages, "value": value}


# ---------------------------------------------------------------- comparisons

class Sharing:
    """Checks that storage identity maps one-to-one between two sides."""

    def __init__(self):
        self.forward = {}
        self.backward = {}

    def check(self, left, right, path):
        if left in self.forward or right in self.backward:
            assert self.forward.get(left) == right and self.backward.get(right) == left, \
                f"{path}: storage sharing differs"
        self.forward[left] = right
        self.backward[right] = left


def check_tensor_against_dump(t, d, path, sharing):
    d = d["tensor"]
    assert d["dtype"] == dtype_name(t.dtype), f"{path}: dtype {d['dtype']} != {t.dtype}"
    assert d["shape"] == list(t.shape), f"{path}: shape {d['shape']} != {list(t.shape)}"
    assert d["strides"] == list(t.stride()), f"{path}: strides {d['strides']} != {t.stride()}"
    assert d["offset"] == t.storage_offset(), f"{path}: offset {d['offset']} != {t.storage_offset()}"
    assert d["storage_numel"] == storage_numel(t), f"{path}: storage numel differs"
    sharing.check(storage_ptr(t), d["storage"], path)
    expected = t.detach().flatten().tolist()
    got = [decode_number(v) for v in d["values"]]
    assert len(expected) == len(got), f"{path}: {len(got)} values, expected {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got)):
        if isinstance(e, float):
            assert (math.isnan(e) and math.isnan(g)) or e == g, f"{path}[{i}]: {g} != {e}"
        else:
            assert int(e) == g, f"{path}[{i}]: {g} != {e}"


def check_against_dump(obj, d, path="value", sharing=None):
    """obj: what torch saved; d: what pth_tool says fgmoe loaded."""
    sharing = sharing or Sharing()
    if isinstance(obj, torch.Tensor):
        check_tensor_against_dump(obj, d, path, sharing)
    elif obj is None or isinstance(obj, bool):
        assert d is obj, f"{path}: {d!r} != {obj!r}"
    elif isinstance(obj, int):
        assert isinstance(d, int) and not isinstance(d, bool) and d == obj, f"{path}: {d!r} != {obj!r}"
    elif isinstance(obj, float):
        got = float(d["float"])
        assert (math.isnan(obj) and math.isnan(got)) or got == obj, f"{path}: {got} != {obj}"
    elif isinstance(obj, str):
        assert d == {"str": obj}, f"{path}: {d!r} != {obj!r}"
    elif isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        assert kind in d and len(d[kind]) == len(obj), f"{path}: {str(d)[:200]} is not a {kind} of {len(obj)}"
        for i, (o, x) in enumerate(zip(obj, d[kind])):
            check_against_dump(o, x, f"{path}[{i}]", sharing)
    elif isinstance(obj, dict):
        assert "dict" in d, f"{path}: not a dict"
        assert [k for k, _ in d["dict"]] == list(obj.keys()), f"{path}: keys differ"
        assert d["ordered"] == isinstance(obj, collections.OrderedDict), f"{path}: ordered flag"
        for (k, x), o in zip(d["dict"], obj.values()):
            check_against_dump(o, x, f"{path}[{k!r}]", sharing)
    else:
        raise TypeError(f"{path}: cannot compare {type(obj)}")
    return sharing


def check_same_torch(a, b, path="value", sharing=None):
    """a: the original object; b: what torch.load read from fgmoe's file."""
    sharing = sharing or Sharing()
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{path}: {type(b)} is not a tensor"
        assert b.dtype == a.dtype and b.shape == a.shape, f"{path}: {b.dtype}{b.shape} != {a.dtype}{a.shape}"
        assert b.stride() == a.stride() and b.storage_offset() == a.storage_offset(), f"{path}: geometry"
        assert storage_numel(b) == storage_numel(a), f"{path}: storage size"
        assert b.device.type == "cpu" and not b.requires_grad
        sharing.check(storage_ptr(a), storage_ptr(b), path)
        if a.is_floating_point():
            assert torch.equal(torch.isnan(a), torch.isnan(b)), f"{path}: NaNs differ"
            assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)), f"{path}: values differ"
        else:
            assert torch.equal(a, b), f"{path}: values differ"
    elif isinstance(a, float):
        assert isinstance(b, float) and ((math.isnan(a) and math.isnan(b)) or a == b), f"{path}: {b} != {a}"
    elif isinstance(a, (list, tuple)):
        assert type(b) is type(a) and len(b) == len(a), f"{path}: {type(b)} != {type(a)}"
        for i, (x, y) in enumerate(zip(a, b)):
            check_same_torch(x, y, f"{path}[{i}]", sharing)
    elif isinstance(a, dict):
        assert type(b) is type(a), f"{path}: {type(b)} != {type(a)}"
        assert list(b.keys()) == list(a.keys()), f"{path}: keys differ"
        for k in a:
            check_same_torch(a[k], b[k], f"{path}[{k!r}]", sharing)
    else:
        assert type(b) is type(a) and b == a, f"{path}: {b!r} != {a!r}"
    return sharing


def has_float(obj):
    if isinstance(obj, float):
        return True
    if isinstance(obj, (list, tuple)):
        return any(has_float(x) for x in obj)
    if isinstance(obj, dict):
        return any(has_float(x) for x in obj.values())
    return False


def torch_load(path, obj):
    # torch 1.x's weights_only unpickler lacks BINFLOAT, so files holding
    # Python floats are read there with the full unpickler (fgmoe wrote them).
    weights_only = TORCH_MAJOR >= 2 or not has_float(obj)
    return torch.load(path, weights_only=weights_only)


# ---------------------------------------------------------------- sample objects

def patterned(shape, dtype, seed=0):
    n = 1
    for s in shape:
        n *= s
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    if dtype in (torch.int32, torch.int64):
        info = torch.iinfo(dtype)
        t = torch.randint(-1000, 1000, shape, generator=g, dtype=dtype)
        if n >= 2:
            t.view(-1)[0] = info.min
            t.view(-1)[1] = info.max
        return t
    t = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    if n >= 4:
        flat = t.view(-1)
        flat[0], flat[1], flat[2], flat[3] = float("nan"), float("inf"), float("-inf"), -0.0
    return t


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_to_embedding = torch.nn.Sequential(
            torch.nn.LayerNorm(12), torch.nn.Linear(12, 8), torch.nn.LayerNorm(8))
        self.pos_embedding = torch.nn.Parameter(torch.randn(1, 4, 8))
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = torch.nn.BatchNorm1d(8)  # buffers, incl. an int64 counter
        self.out = torch.nn.Linear(8, 3)


def optimizer_state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def masks():
    g = torch.Generator().manual_seed(1)
    return {
        "bool_hw.pth": torch.rand(37, 53, generator=g) > 0.5,
        "bool_1hw.pth": torch.rand(1, 37, 53, generator=g) > 0.3,
        "uint8_hw.pth": (torch.rand(40, 30, generator=g) * 255).to(torch.uint8),
        "uint8_1hw.pth": (torch.rand(1, 40, 30, generator=g) > 0.5).to(torch.uint8) * 255,
        "float_hw.pth": torch.rand(20, 24, generator=g),
        "float_1hw.pth": torch.rand(1, 20, 24, generator=g, dtype=torch.float64),
        "n01440764_10026.pth": torch.rand(1, 224, 224, generator=g) > 0.5,
    }


# ---------------------------------------------------------------- cases

def case_torch_tensors(tool):
    """torch.save(tensor) of every dtype, read by fgmoe."""
    for dtype in ALL_DTYPES:
        for shape in [(3, 5), (), (0,), (2, 3, 4)]:
            t = patterned(shape, dtype, seed=len(shape))
            path = tool.file(f"t_{dtype_name(dtype)}_{len(shape)}.pth")
            torch.save(t, path)
            check_against_dump(t, tool.run("dump-tensor", path), f"{dtype}{shape}")
    # dtypes fgmoe has no DType for are refused by name.
    torch.save(torch.zeros(3, dtype=torch.int8), tool.file("int8.pth"))
    error = tool.run("dump-tensor", tool.file("int8.pth"), expect_error=True)
    assert "CharStorage" in error and "int8.pth" in error, error


def case_torch_masks(tool):
    """Masks as the dataset stores them: bool/uint8/float, (H, W) and (1, H, W)."""
    for name, mask in masks().items():
        path = tool.file(name)
        torch.save(mask, path)
        check_against_dump(mask, tool.run("dump-tensor", path), name)


def case_torch_state_dict(tool):
    """A module's state_dict (OrderedDict with _metadata, BUILD), read whole and as a state dict."""
    torch.manual_seed(0)
    sd = TinyNet().state_dict()
    path = tool.file("tiny.pth")
    torch.save(sd, path)
    check_against_dump(sd, tool.run("dump", path))
    check_against_dump(sd, tool.run("dump-state-dict", path))
    # Parameters pickle through torch._utils._rebuild_parameter.
    params = collections.OrderedDict(TinyNet().named_parameters())
    torch.save(params, tool.file("params.pth"))
    check_against_dump(collections.OrderedDict((k, v.detach()) for k, v in params.items()),
                       tool.run("dump", tool.file("params.pth")))


def case_torch_checkpoint(tool):
    """{"model": sd, "optimizer": ..., "epoch": 3, ...} as the reference trainer saves."""
    torch.manual_seed(0)
    model = TinyNet()
    ckpt = {
        "model": model.state_dict(),
        "optimizer": optimizer_state(model),
        "lr_scheduler": {"t_initial": 100, "warmup_t": 30, "base_values": [0.0005], "noise_range_t": None},
        "max_accuracy": 75.4,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
        "epoch": 3,
        "config": "MODEL:\n  TYPE: soft_moe_32\n",
        "flags": (True, False, None),
        "big": [2 ** 40, -2 ** 63, 2 ** 63 - 1, -1, 255, 256, 65536],
    }
    path = tool.file("ckpt_epoch_3.pth")
    torch.save(ckpt, path)
    check_against_dump(ckpt, tool.run("dump", path))
    check_against_dump(ckpt["model"], tool.run("dump-state-dict", path))
    # Protocol 4 pickles (FRAME, SHORT_BINUNICODE, MEMOIZE, ...) read the same.
    torch.save(ckpt, tool.file("ckpt_p4.pth"), pickle_protocol=4)
    check_against_dump(ckpt, tool.run("dump", tool.file("ckpt_p4.pth")))


def case_torch_checkpoint_with_config_object(tool):
    """A checkpoint whose config is a pickled class instance (as yacs' CfgNode in the
    reference): its state dict loads; the whole file is refused, naming the class."""
    cfg = CfgNode(MODEL=CfgNode(TYPE="soft_moe_32", NUM_CLASSES=100), TRAIN={"BASE_LR": 5e-4})
    torch.manual_seed(0)
    sd = TinyNet().state_dict()
    path = tool.file("swin_ckpt.pth")
    torch.save({"model": sd, "config": cfg, "epoch": 99}, path)
    check_against_dump(sd, tool.run("dump-state-dict", path))
    error = tool.run("dump", path, expect_error=True)
    assert "CfgNode" in error and "['config']" in error, error


class CfgNode(dict):
    """Stands for yacs.config.CfgNode: a dict subclass with attributes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__["frozen"] = False


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def case_torch_forbidden_global(tool):
    """A file that would run os.system under plain torch.load: fgmoe refuses it, runs nothing."""
    marker = tool.file("pwned")
    sd = collections.OrderedDict(w=torch.ones(2))
    torch.save({"model": sd, "payload": Evil(marker)}, tool.file("evil.pth"))
    error = tool.run("dump", tool.file("evil.pth"), expect_error=True)
    assert "system" in error and "['payload']" in error, error
    # The state dict beside it is still readable, and nothing ran.
    check_against_dump(sd, tool.run("dump-state-dict", tool.file("evil.pth")))
    torch.save({"model": {"w": Evil(marker)}}, tool.file("evil_model.pth"))
    error = tool.run("dump-state-dict", tool.file("evil_model.pth"), expect_error=True)
    assert "system" in error, error
    assert not os.path.exists(marker)


def case_torch_views(tool):
    """Shared storages, offsets, transposes, strided slices and expands."""
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    other = torch.arange(12, dtype=torch.int64).reshape(3, 4)
    obj = {
        "base": base,
        "t": base.t(),
        "row": base[3],
        "block": base[1:4, 2:8:2],
        "narrow": base.narrow(1, 5, 3),
        "expanded": base[0:1].expand(4, 10),
        "same_again": base,
        "other_t": other.t(),
        "other_col": other[:, 1],
        "permuted": torch.arange(24.0, dtype=torch.float64).reshape(2, 3, 4).permute(2, 0, 1),
    }
    torch.save(obj, tool.file("views.pth"))
    sharing = check_against_dump(obj, tool.run("dump", tool.file("views.pth")))
    assert len(set(sharing.backward)) == 3


def case_fgmoe_to_torch(tool):
    """fgmoe writes; torch.load (weights_only=True where torch allows) reads the same."""
    base = patterned((5, 6), torch.float32, 3)
    objects = {
        "tensors": {dtype_name(d): patterned((3, 4), d, i) for i, d in enumerate(ALL_DTYPES)},
        "views": [base, base.t(), base[2], base[1:4, ::2], base[0:1].expand(3, 6),
                  torch.arange(10, dtype=torch.int64)[3:7]],
        "ordered_sd": TinyNet().state_dict(),
        "plain": {"epoch": 3, "name": "soft_moe_32 ✓", "flags": [True, False, None],
                  "ints": (0, 255, 256, 65535, 65536, -1, -2 ** 31, 2 ** 31, 2 ** 63 - 1, -2 ** 63),
                  1: "int key", "nested": [[[[]]], (), ((),), {}]},
        "scalars": [torch.tensor(3.5), torch.tensor(7), torch.zeros(0, 3)],
    }
    for name, obj in objects.items():
        path = tool.file(f"fg_{name}.pth")
        tool.write("write", obj, path)
        check_same_torch(obj, torch_load(path, obj), name)
    with_floats = {"lr": 5e-4, "betas": (0.9, 0.999), "nan": float("nan"), "inf": -float("inf"), "z": -0.0,
                   "w": torch.ones(2)}
    tool.write("write", with_floats, tool.file("fg_floats.pth"))
    check_same_torch(with_floats, torch_load(tool.file("fg_floats.pth"), with_floats))

    # A state dict that a module loads strictly, and masks as single tensors.
    torch.manual_seed(1)
    source = TinyNet()
    tool.write("write-state-dict", source.state_dict(), tool.file("fg_sd.pth"))
    loaded = torch.load(tool.file("fg_sd.pth"), weights_only=True)
    assert isinstance(loaded, collections.OrderedDict)
    target = TinyNet()
    target.load_state_dict(loaded, strict=True)
    for k, v in source.state_dict().items():
        assert torch.equal(v, target.state_dict()[k]), k
    for name, mask in masks().items():
        tool.write("write-tensor", mask, tool.file("fg_" + name))
        check_same_torch(mask, torch.load(tool.file("fg_" + name), weights_only=True), name)


def case_fgmoe_zip64(tool):
    """fgmoe's zip64 records are read by torch and by Python's zipfile."""
    obj = {"w": patterned((7, 9), torch.float32), "m": patterned((4,), torch.bool)}
    path = tool.file("fg_zip64.pth")
    tool.write("write", obj, path, "--zip64")
    check_same_torch(obj, torch.load(path, weights_only=True))
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        names = z.namelist()
        assert "archive/data.pkl" in names and "archive/version" in names, names
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED


def case_fgmoe_roundtrip_through_torch(tool):
    """torch -> fgmoe -> torch: a checkpoint survives fgmoe reading and rewriting it."""
    torch.manual_seed(2)
    model = TinyNet()
    ckpt = {"model": model.state_dict(), "optimizer": optimizer_state(model), "epoch": 7}
    torch.save(ckpt, tool.file("orig.pth"))
    dumped = tool.run("dump", tool.file("orig.pth"))
    # Re-encode what fgmoe read as a write spec, write it, and let torch compare.
    spec = dump_to_spec(dumped)
    with open(tool.file("respec.json"), "w") as f:
        json.dump(spec, f)
    tool.run("write", tool.file("respec.json"), tool.file("rewritten.pth"))
    check_same_torch(ckpt, torch_load(tool.file("rewritten.pth"), ckpt))


def dump_to_spec(dumped):
    """A pth_tool dump as a write spec (storages rebuilt from the dumped views)."""
    storages = {}

    def walk(d):
        if isinstance(d, dict) and "tensor" in d:
            t = d["tensor"]
            key = str(t["storage"])
            s = storages.setdefault(key, {"dtype": t["dtype"], "values": [0] * t["storage_numel"]})
            # Scatter the view's values back into its storage.
            idx = [0] * len(t["shape"])
            for v in t["values"]:
                pos = t["offset"] + sum(i * st for i, st in zip(idx, t["strides"]))
                s["values"][pos] = v
                for k in reversed(range(len(idx))):
                    idx[k] += 1
                    if idx[k] < t["shape"][k]:
                        break
                    idx[k] = 0
            return {"tensor": {"storage": key, "shape": t["shape"], "strides": t["strides"],
                               "offset": t["offset"]}}
        if isinstance(d, dict):
            return {k: ([[kv[0], walk(kv[1])] for kv in v] if k == "dict" else
                        [walk(x) for x in v] if k in ("list", "tuple") else v) for k, v in d.items()}
        return d

    value = walk(dumped)
    return {"storages": storages, "value": value}


# ---- safetensors: the package when present, else the format by hand ----

ST_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
ST_TORCH = {v: k for k, v in ST_DTYPES.items()}


def raw_bytes(t):
    t = t.contiguous().reshape(-1)
    return bytes(t.view(torch.uint8).numpy()) if t.numel() else b""


def save_safetensors_by_hand(tensors, path, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        b = raw_bytes(t)
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def load_safetensors_by_hand(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    assert (8 + n) % 8 == 0, "header not padded to 8 bytes"
    buf = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1]) for info in header.values())
    pos = 0
    for b, e in spans:
        assert b == pos, "holes or overlaps"
        pos = e
    assert pos == len(buf), "unused bytes"
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dtype = ST_TORCH[info["dtype"]]
        assert b % torch.empty(0, dtype=dtype).element_size() == 0, f"{name} misaligned"
        raw = torch.frombuffer(bytearray(buf[b:e]), dtype=torch.uint8) if e > b else torch.empty(0, dtype=torch.uint8)
        out[name] = raw.view(dtype).reshape(info["shape"])
    return out, metadata


def case_safetensors(tool):
    tensors = collections.OrderedDict(
        (f"w.{dtype_name(d)}", patterned((3, 5), d, i)) for i, d in enumerate(ALL_DTYPES))
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 4)
    metadata = {"format": "pt", "epoch": "3"}
    try:
        import safetensors.torch as st
    except ImportError:
        st = None
    path = tool.file("torch.safetensors")
    if st:
        st.save_file(dict(tensors), path, metadata=metadata)
    else:
        save_safetensors_by_hand(tensors, path, metadata)
    dumped = tool.run("dump-safetensors", path)
    assert dict(map(tuple, dumped["metadata"])) == metadata
    got = {k: v for k, v in dumped["tensors"]["dict"]}
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        check_against_dump(t, got[name], name)

    # fgmoe writes, Python reads (with the package if present, and by hand always).
    out = tool.file("fg.safetensors")
    spec = to_spec(collections.OrderedDict(tensors))
    spec["metadata"] = [[k, v] for k, v in metadata.items()]
    with open(tool.file("st_spec.json"), "w") as f:
        json.dump(spec, f)
    tool.run("write-safetensors", tool.file("st_spec.json"), out)
    loaded, meta = load_safetensors_by_hand(out)
    assert meta == metadata
    assert list(loaded) == list(tensors), "header order differs from the state dict's"
    for name, t in tensors.items():
        check_same_torch(t.contiguous(), loaded[name].clone(), name)
    if st:
        for name, t in st.load_file(out).items():
            check_same_torch(tensors[name], t, name)


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--case", required=True, choices=sorted(CASES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fgmoe-interop-") as workdir:
        CASES[args.case](Tool(args.tool, workdir))
    print(f"ok: {args.case} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
