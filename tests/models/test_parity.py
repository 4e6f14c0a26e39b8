"""Parity of fgmoe's Soft MoE ViT with a PyTorch reference of the published
model (reference_model.py) on the same weights and inputs: logits, auxiliary
loss and every parameter gradient; and weights moving both ways."""
import argparse
import json
import os
import sys
import tempfile

try:
    import torch
except ImportError:
    sys.exit(77)  # skipped: no PyTorch for this Python

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import ReferenceSoftMoEViT  # noqa: E402


def rel_err(a, b):
    return (a.double() - b.double()).norm().item() / max(b.double().norm().item(), 1e-30)


def run(cmd):
    rc = os.system(cmd)
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {cmd}")


def check_export(tool, name, tmp):
    run(f"{tool} export {tmp} {name}")
    cfg = json.load(open(os.path.join(tmp, "config.json")))
    model = ReferenceSoftMoEViT(cfg).train()
    weights = torch.load(os.path.join(tmp, "weights.pth"), weights_only=True)
    # Strict: fgmoe's state_dict keys and shapes are the reference's.
    model.load_state_dict(weights, strict=True)
    inputs = torch.load(os.path.join(tmp, "inputs.pth"), weights_only=True)
    outputs = torch.load(os.path.join(tmp, "outputs.pth"), weights_only=True)
    grads = torch.load(os.path.join(tmp, "grads.pth"), weights_only=True)
    logits, aux = model(inputs["images"], inputs["masks"])
    (logits * inputs["proj"]).sum().add(aux).backward()
    failures = []
    e = rel_err(outputs["logits"], logits)
    print(f"{name}: logits relative error {e:.2e}")
    if not e < 1e-5:
        failures.append(f"logits {e:.2e}")
    e = rel_err(outputs["aux"].reshape(1), aux.detach().reshape(1))
    print(f"{name}: aux {outputs['aux'].item():.6f} vs {aux.item():.6f}, relative error {e:.2e}")
    if not e < 1e-5:
        failures.append(f"aux {e:.2e}")
    worst = 0.0
    for n, p in model.named_parameters():
        g = grads[n]
        e = (g.double() - p.grad.double()).abs().max().item() / max(p.grad.double().abs().max().item(), 1e-12)
        worst = max(worst, e)
        if not e < 1e-4:
            failures.append(f"gradient of {n}: {e:.2e}")
    print(f"{name}: worst parameter-gradient relative error {worst:.2e} over {len(grads)} parameters")
    return failures


def check_torch_to_fgmoe(tool, name, tmp):
    cfg = json.load(open(os.path.join(tmp, "config.json")))
    torch.manual_seed(5)
    model = ReferenceSoftMoEViT(cfg).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("gamma_2"):
                p.uniform_(0.2, 1.0)
    inputs = torch.load(os.path.join(tmp, "inputs.pth"), weights_only=True)
    with torch.no_grad():
        expected, _ = model(inputs["images"])
    failures = []
    sd_path = os.path.join(tmp, "torch_state_dict.pth")
    ckpt_path = os.path.join(tmp, "torch_checkpoint.pth")
    torch.save(model.state_dict(), sd_path)
    torch.save({"model": model.state_dict(), "epoch": 7, "max_accuracy": 12.5}, ckpt_path)
    for label, path in [("state_dict", sd_path), ("checkpoint", ckpt_path)]:
        out = os.path.join(tmp, f"logits_{label}.pth")
        run(f"{tool} forward {name} {path} {os.path.join(tmp, 'inputs.pth')} {out}")
        got = torch.load(out, weights_only=True)
        e = rel_err(got, expected)
        print(f"{name}: torch.save {label} -> fgmoe logits relative error {e:.2e}")
        if not e < 1e-5:
            failures.append(f"torch {label} -> fgmoe logits {e:.2e}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--config", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        failures = check_export(a.tool, a.config, tmp) + check_torch_to_fgmoe(a.tool, a.config, tmp)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("parity OK")


if __name__ == "__main__":
    main()
