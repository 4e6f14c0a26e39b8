"""The PyTorch peer of fgmoe-bench: the reference Soft MoE ViT (tests/models/
reference_model.py), full training steps with the auxiliary loss, gradient
clipping and AdamW. Prints 'median min max' step times in seconds."""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
from reference_model import ReferenceSoftMoEViT  # noqa: E402


def preset(name, classes, image_size):
    cfg = dict(image_size=image_size, patch_size=16, num_channels=3, width=384, heads=6, depth=8,
               ffn_width=2048, moe_layers=2, num_experts=32, slots_per_expert=1, dropout=0.1,
               layer_norm_eps=1e-5, num_classes=classes, layer_scale_layers=[7],
               layer_scale_init=0.0, aux_layer=7)
    if name == "soft_moe_128":
        cfg["num_experts"] = 128
    elif name == "vit":
        cfg.update(moe_layers=0, layer_scale_layers=[], aux_layer=-1)
    return cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="soft_moe_32")
    ap.add_argument("--device", default="cpu")
    for name, default in [("batch", 8), ("image-size", 224), ("classes", 1000), ("warmup", 2),
                          ("steps", 5), ("threads", 2)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = ReferenceSoftMoEViT(preset(a.model, a.classes, a.image_size)).to(dev).train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, weight_decay=0.05)
    images = torch.randn(a.batch, 3, a.image_size, a.image_size, device=dev)
    masks = (torch.rand(a.batch, 1, a.image_size, a.image_size, device=dev) > 0.5).float()
    targets = torch.randn(a.batch, a.classes, device=dev).softmax(-1)
    times = []
    for it in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        logits, aux = model(images, masks)
        loss = torch.sum(-targets * torch.log_softmax(logits, dim=-1), dim=-1).mean()
        if aux is not None:
            loss = loss + 0.01 * aux
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        if it >= a.warmup:
            times.append(t1 - t0)
    times.sort()
    print(times[len(times) // 2], times[0], times[-1])


if __name__ == "__main__":
    main()
