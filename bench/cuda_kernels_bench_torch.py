"""The PyTorch peer of fgmoe-cuda-bench: the same operations at the same shapes
on the GPU, timed with CUDA events per repetition (median, min, max).
Prints one 'name|median_ms|min_ms|max_ms' line per case; the names match the
C++ benchmark's rows. Uses PyTorch's own kernels: native layer norm and softmax,
scaled_dot_product_attention (flash/efficient), cuBLASLt linear, fused AdamW,
and the reference encoder layer (tests/models/reference_model.py) under
torch.autocast(bfloat16)."""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))
from reference_model import EncoderLayer, ReferenceSoftMoEViT  # noqa: E402


def time_device(args, run, setup=None):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for it in range(args.warmup + args.repeat):
        if setup:
            setup()
        start.record()
        run()
        stop.record()
        stop.synchronize()
        if it >= args.warmup:
            times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2], times[0], times[-1]


def config(num_classes=100):
    return dict(width=384, depth=8, moe_layers=2, dropout=0.1, layer_norm_eps=1e-5, heads=6,
                ffn_width=2048, num_experts=32, slots_per_expert=1, layer_scale_layers=[7],
                layer_scale_init=0.0, num_channels=3, patch_size=16, image_size=224,
                num_classes=num_classes, aux_layer=7)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    b, tokens, width, heads, head_dim, ffn = args.batch, 196, 384, 6, 64, 2048
    rows = b * tokens
    results = []

    def add(name, run, setup=None):
        if args.filter and args.filter not in name:
            return
        results.append((name,) + time_device(args, run, setup))

    with torch.no_grad():
        x = torch.randn(rows, width, device=dev)
        w, bias = torch.randn(width, device=dev), torch.randn(width, device=dev)
        add("layer_norm fwd fp32 (b*196, 384)", lambda: F.layer_norm(x, (width,), w, bias, 1e-5))
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [width], w, bias, 1e-5)
        g = torch.randn(rows, width, device=dev)
        add("layer_norm bwd fp32 (b*196, 384)",
            lambda: torch.ops.aten.native_layer_norm_backward(g, x, [width], mean, rstd, w, bias,
                                                              [True, True, True]))
        s = torch.randn(b * heads * tokens, tokens, device=dev)
        y = torch.softmax(s, -1)
        add("softmax fwd fp32 attention rows (b*6*196, 196)", lambda: torch.softmax(s, -1))
        gs = torch.randn_like(s)
        add("softmax bwd fp32 attention rows (b*6*196, 196)",
            lambda: torch.ops.aten._softmax_backward_data(gs, y, -1, torch.float32))
        logits = torch.randn(b, tokens, 32, device=dev)
        add("softmax fwd fp32 Soft MoE dispatch (b, 196, 32) over tokens", lambda: torch.softmax(logits, 1))
        add("softmax fwd fp32 Soft MoE combine (b*196, 32)",
            lambda: torch.softmax(logits.view(b * tokens, 32), -1))

    q0, k0, v0, grad = (torch.randn(b, heads, tokens, head_dim, device=dev, dtype=torch.bfloat16)
                        for _ in range(4))
    for kind in ("fused", "composite"):
        if kind == "fused":
            attend = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)  # noqa: E731
        else:
            def attend(q, k, v):
                p = torch.softmax((q * head_dim ** -0.5) @ k.transpose(-1, -2), -1)
                return F.dropout(p, 0.1) @ v
        with torch.no_grad():
            add(f"attention fwd bf16 {kind} (b, 6, 196, 64), p 0.1", lambda: attend(q0, k0, v0))
        state = {}

        def setup():
            state["q"], state["k"], state["v"] = (t.detach().requires_grad_() for t in (q0, k0, v0))

        add(f"attention fwd+bwd bf16 {kind} (b, 6, 196, 64), p 0.1",
            lambda: attend(state["q"], state["k"], state["v"]).backward(grad), setup)

    with torch.no_grad():
        xb = torch.randn(rows, width, device=dev, dtype=torch.bfloat16)
        wb = torch.randn(ffn, width, device=dev, dtype=torch.bfloat16) * 0.05
        bb = torch.randn(ffn, device=dev, dtype=torch.bfloat16)
        add("linear+bias bf16 (b*196, 384) -> 2048", lambda: F.linear(xb, wb, bb))
        x32, w32, b32 = xb.float(), wb.float(), bb.float()
        torch.backends.cuda.matmul.allow_tf32 = True
        add("linear+bias fp32 tf32 (b*196, 384) -> 2048", lambda: F.linear(x32, w32, b32))
        torch.backends.cuda.matmul.allow_tf32 = False
        h = torch.randn(rows, ffn, device=dev, dtype=torch.bfloat16)
        w2 = torch.randn(width, ffn, device=dev, dtype=torch.bfloat16) * 0.02
        b2 = torch.randn(width, device=dev, dtype=torch.bfloat16)
        add("linear+bias bf16 (b*196, 2048) -> 384", lambda: F.linear(h, w2, b2))

    model = ReferenceSoftMoEViT(config()).to(dev)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith(".bias"))]
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=5e-4, fused=True)
    add("adamw step, all soft_moe_32 parameters (fp32)", opt.step)

    for index in (0, 7):
        name = ("encoder layer " + ("dense" if index == 0 else "Soft MoE") +
                " fwd+bwd bf16 autocast (b, 196, 384)")
        layer = EncoderLayer(config(), index).to(dev).train()
        x0 = torch.randn(b, tokens, width, device=dev)
        g = torch.randn(b, tokens, width, device=dev)
        state = {}

        def setup():
            layer.zero_grad(set_to_none=True)
            state["x"] = x0.detach().requires_grad_()

        def run():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out, _ = layer(state["x"])
            out.backward(g)

        add(name, run, setup)

    for name, median, lo, hi in results:
        print(f"{name}|{median:.6f}|{lo:.6f}|{hi:.6f}", flush=True)


if __name__ == "__main__":
    main()
