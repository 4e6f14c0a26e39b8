"""fgmoe-infer on weights written by torch.save: logits on a preprocessed
tensor equal the PyTorch reference's; on an image, the validation transform
matches torchvision's closely enough that the logits agree."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import torch
    from PIL import Image
    from torchvision import transforms
except ImportError:
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
from reference_model import ReferenceSoftMoEViT  # noqa: E402

FGMOE_CONFIG = {
    "DATA": {"IMG_SIZE": 32},
    "MODEL": {"TYPE": "soft_moe_32", "NUM_CLASSES": 6,
              "SOFT_MOE": {"PATCH_SIZE": 8, "EMBED_DIM": 32, "DEPTH": 2, "NUM_HEADS": 2, "MLP_DIM": 48,
                           "MOE_LAYERS": 1, "NUM_EXPERTS": 4, "LAYER_SCALE_LAYERS": [1], "AUX_LAYER": 1}},
}
REFERENCE_CONFIG = dict(image_size=32, patch_size=8, num_channels=3, width=32, heads=2, depth=2, ffn_width=48,
                        moe_layers=1, num_experts=4, slots_per_expert=1, dropout=0.0, layer_norm_eps=1e-5,
                        num_classes=6, layer_scale_layers=[1], layer_scale_init=0.5, aux_layer=1)


def rel_err(a, b):
    return (a.double() - b.double()).norm().item() / b.double().norm().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = ReferenceSoftMoEViT(REFERENCE_CONFIG).eval()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "cfg.json")
        json.dump(FGMOE_CONFIG, open(cfg, "w"))
        weights = os.path.join(tmp, "weights.pth")
        torch.save({"model": model.state_dict(), "epoch": 3}, weights)

        x = torch.randn(5, 3, 32, 32)
        torch.save(x, os.path.join(tmp, "x.pth"))
        out = os.path.join(tmp, "logits.pth")
        subprocess.run([a.tool, "--cfg", cfg, "--weights", weights, "--input-tensor", os.path.join(tmp, "x.pth"),
                        "--dump-logits", out, "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        with torch.no_grad():
            expected, _ = model(x)
        e = rel_err(torch.load(out, weights_only=True), expected)
        print(f"input tensor: logits relative error {e:.2e}")
        if not e < 1e-5:
            failures.append(f"input tensor logits {e:.2e}")

        # An image through the validation transform, against torchvision's.
        gen = torch.Generator().manual_seed(1)
        pixels = (torch.rand(45, 57, 3, generator=gen) * 255).to(torch.uint8).numpy()
        image_path = os.path.join(tmp, "image.png")
        Image.fromarray(pixels).save(image_path)
        done = subprocess.run([a.tool, "--cfg", cfg, "--weights", weights, image_path, "--dump-logits", out,
                               "--device", "cpu"], check=True, capture_output=True, text=True)
        lines = [l for l in done.stdout.splitlines() if l.strip().startswith(("1.", "2.", "3.", "4.", "5."))]
        if len(lines) != 5:
            failures.append(f"expected 5 ranked classes, got:\n{done.stdout}")
        tf = transforms.Compose([
            transforms.Resize(int(32 / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(32), transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        with torch.no_grad():
            expected, _ = model(tf(Image.open(image_path).convert("RGB")).unsqueeze(0))
        e = rel_err(torch.load(out, weights_only=True), expected)
        print(f"image: logits relative error against torchvision preprocessing {e:.2e}")
        if not e < 1e-3:
            failures.append(f"image logits {e:.2e}")
        top = int(expected.argmax())
        if f"class {top}" not in lines[0]:
            failures.append(f"top class differs: torch says {top}, fgmoe: {lines[0]}")

        bad = subprocess.run([a.tool, "--cfg", cfg, "--weights", os.path.join(tmp, "missing.pth"), image_path],
                             capture_output=True, text=True)
        if bad.returncode == 0 or "missing.pth" not in bad.stderr:
            failures.append("a missing weights file was not reported by name")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("fgmoe-infer OK")


if __name__ == "__main__":
    main()
