"""torch.save oracle for fgmoe's mask tests.

  torch_masks.py write DIR   writes one mask per dtype and layout (the pattern below)
  torch_masks.py check DIR   loads fgmoe's files with torch.load(weights_only=True)
                             and checks dtype, shape and values; exits 1 on a mismatch
"""
import os
import sys

import torch

H, W = 37, 53
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "uint8": torch.uint8, "bool": torch.bool, "int64": torch.int64}


def pattern():
    y = torch.arange(H).view(H, 1)
    x = torch.arange(W).view(1, W)
    return ((x * 7 + y * 3) % 5 == 0)


def as_dtype(p, name):
    if name == "bool":
        return p.clone()
    if name in ("uint8", "int64"):
        return p.to(DTYPES[name]) * 3  # any nonzero value is foreground
    return p.to(DTYPES[name]) * 0.75


def write(folder):
    for name in DTYPES:
        m = as_dtype(pattern(), name)
        torch.save(m, os.path.join(folder, f"{name}_hw.pth"))
        torch.save(m.unsqueeze(0), os.path.join(folder, f"{name}_1hw.pth"))
    # Views: a transposed (non-contiguous) tensor and a slice with a storage offset.
    big = as_dtype(pattern(), "float32")
    torch.save(big.t().contiguous().t(), os.path.join(folder, "view_transposed.pth"))
    stacked = torch.stack([torch.zeros(H, W), big])
    torch.save(stacked[1], os.path.join(folder, "view_offset.pth"))
    # Values just below and above what survives the reference's 8-bit conversion.
    torch.save(torch.tensor([[0.003, 0.0039216, 0.004, 1.0]]), os.path.join(folder, "threshold.pth"))
    torch.save({"mask": big}, os.path.join(folder, "dict.pth"))
    # One stored value repeated (stride 0): small, then past the pixel limit.
    torch.save(torch.ones(1, 1).expand(H, W), os.path.join(folder, "expanded.pth"))
    torch.save(torch.ones(1, 1, dtype=torch.uint8).expand(1, 20000, 20000),
               os.path.join(folder, "expanded_huge.pth"))
    torch.save(torch.zeros(2, H, W), os.path.join(folder, "two_channels.pth"))


def check(folder):
    ok = True
    for name, dtype in DTYPES.items():
        for layout in ("hw", "1hw"):
            path = os.path.join(folder, f"fg_{name}_{layout}.pth")
            t = torch.load(path, weights_only=True)
            expected = as_dtype(pattern(), name)
            if layout == "1hw":
                expected = expected.unsqueeze(0)
            if t.dtype != dtype or t.shape != expected.shape or not torch.equal(t, expected):
                print(f"mismatch in {path}: {t.dtype} {tuple(t.shape)}")
                ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])
