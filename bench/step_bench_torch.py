"""The PyTorch peer of fgmoe-bench: the reference Soft MoE ViT (tests/models/
reference_model.py), whole training steps with the auxiliary loss, gradient
clipping and AdamW on synthetic batches, eager or under torch.compile.

fgmoe-bench runs this script and reads the last line of its standard output,
one JSON object:
  {"ok": true, "variant": "eager", "torch_version": ..., "times": [seconds per
   timed step], "phases": {"forward": [...], ...} (with --breakdown),
   "peak_memory_bytes": ... (CUDA: torch.cuda.max_memory_allocated over the
   timed steps), "tensor_peak_bytes": ... (CPU, eager: the most bytes tensors
   held during one more step, see cpu_tensor_meter), "max_rss_bytes": ...
   (the process's peak resident set, VmHWM),
   "notes": [...]}
or {"ok": false, "variant": ..., "unavailable": "why"} when the variant cannot
run here (torch.compile before torch 2.0, or torch.compile failing on the
model; its traceback then goes to standard error). Errors go to standard error
with a non-zero exit status."""
import argparse
import contextlib
import json
import os
import resource
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "models"))


def preset(name, classes, image_size):
    cfg = dict(image_size=image_size, patch_size=16, num_channels=3, width=384, heads=6, depth=8,
               ffn_width=2048, moe_layers=2, num_experts=32, slots_per_expert=1, dropout=0.1,
               layer_norm_eps=1e-5, num_classes=classes, layer_scale_layers=[7],
               layer_scale_init=0.0, aux_layer=7)
    if name == "soft_moe_128":
        cfg["num_experts"] = 128
    elif name == "vit":
        cfg.update(moe_layers=0, layer_scale_layers=[], aux_layer=-1)
    elif name != "soft_moe_32":
        raise SystemExit(f"step_bench_torch.py: unknown model {name}")
    return cfg


def max_rss_bytes():
    # VmHWM is this program's own peak; ru_maxrss also keeps the peak of the
    # process that exec replaced (here fgmoe-bench, through popen's shell).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_tensor_meter(torch):
    """(make_meter, bytes_in_use), or (None, None) where CPU memory cannot be metered.

    make_meter(baseline) is a context manager whose peak_bytes() is the most
    memory in use while it was entered, less the baseline (a bytes_in_use()).

    PyTorch keeps no count of CPU tensor memory; its CPU allocator takes every
    tensor from the C library's malloc and frees it at once. So glibc's bytes in
    use (mallinfo2: heap chunks plus mmapped ones) are read before and after
    every operator PyTorch dispatches (autograd's backward operators included),
    and the meter keeps the most seen, less what was in use when it was made.
    Scratch an operator allocates and frees inside itself is not seen; Python
    objects (interpreter allocations outside pymalloc) are, a few KiB a step."""
    import ctypes
    try:
        from torch.utils._python_dispatch import TorchDispatchMode
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (ImportError, OSError, AttributeError):
        return None, None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")]

    mallinfo2.restype = MallInfo2

    def in_use():
        m = mallinfo2()
        return m.uordblks + m.hblkhd

    class Meter(TorchDispatchMode):
        def __init__(self, baseline):
            super().__init__()
            self.baseline, self.peak = baseline, baseline

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.peak = max(self.peak, in_use())
            out = func(*args, **(kwargs or {}))
            self.peak = max(self.peak, in_use())
            return out

        def peak_bytes(self):
            return self.peak - self.baseline

    return Meter, in_use


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="soft_moe_32")
    ap.add_argument("--config", default="", help="the reference model's cfg dict as JSON (overrides --model)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--no-tf32", action="store_true", help="CUDA fp32: keep float32 matmuls off TF32")
    ap.add_argument("--variant", default="eager", choices=["eager", "compiled"])
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                    help="torch.compile's mode for --variant compiled")
    ap.add_argument("--breakdown", action="store_true", help="time forward, backward and optimizer apart")
    for name, default in [("batch", 8), ("image-size", 224), ("classes", 1000), ("warmup", 2),
                          ("steps", 5), ("threads", 2), ("seed", 0)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()

    # --threads bounds every thread pool. torch.set_num_threads does not reach the
    # BLAS library Debian's torch calls (OpenBLAS, pthread build): without this its
    # GEMMs would run on every core whatever --threads says. Read when torch loads.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(a.threads)

    import torch
    from reference_model import ReferenceSoftMoEViT

    notes = []
    if a.variant == "compiled" and not hasattr(torch, "compile"):
        emit({"ok": False, "variant": a.variant, "torch_version": torch.__version__,
              "unavailable": f"torch.compile not available in torch {torch.__version__}"})
        return
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("step_bench_torch.py: this PyTorch sees no CUDA device")
    if a.precision == "bf16" and dev.type != "cuda":
        raise SystemExit("step_bench_torch.py: bf16 is measured on CUDA only")
    if dev.type == "cuda":
        tf32 = a.precision == "fp32" and not a.no_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    # CPU tensor memory counts from here, as fgmoe counts every live tensor: the
    # weights, their gradients, AdamW's moments, the batch and the activations.
    make_meter, bytes_in_use = (cpu_tensor_meter(torch) if dev.type == "cpu" and a.variant == "eager"
                                else (None, None))
    baseline = bytes_in_use() if bytes_in_use else 0
    cfg = json.loads(a.config) if a.config else preset(a.model, a.classes, a.image_size)
    model = ReferenceSoftMoEViT(cfg).to(dev).train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    # On CUDA, PyTorch's fastest AdamW (one fused kernel, as fgmoe's); on the CPU its default.
    fused = {"fused": True} if dev.type == "cuda" else {}
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, weight_decay=0.05, **fused)
    run = model
    mark_step = None  # with CUDA graphs: torch.compiler.cudagraph_mark_step_begin, called at each step's start
    if a.variant == "compiled":
        mode = None if a.compile_mode == "default" else a.compile_mode
        run = torch.compile(model, mode=mode)
        if mode is not None:
            notes.append(f"torch.compile(mode='{mode}')")
        graphs = dev.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        if graphs:
            mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
        if graphs and a.warmup < 3:
            # CUDA graph trees run a step eagerly, then record, then replay.
            notes.append(f"warm-up raised from {a.warmup} to 3 steps for CUDA graph recording")
            a.warmup = 3
    size = cfg["image_size"]
    images = torch.randn(a.batch, cfg["num_channels"], size, size, device=dev)
    masks = (torch.rand(a.batch, 1, size, size, device=dev) > 0.5).float()
    targets = torch.randn(a.batch, cfg["num_classes"], device=dev).softmax(-1)

    def autocast():
        if a.precision == "bf16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    phases = {"forward": [], "backward": [], "optimizer": []}

    def step():
        if mark_step:
            mark_step()  # a new training step: earlier outputs may be overwritten
        with autocast():
            logits, aux = run(images, masks)
            loss = torch.sum(-targets * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            if aux is not None:
                loss = loss + 0.01 * aux
        if a.breakdown:
            sync()
        t1 = time.perf_counter()
        loss.backward()
        if a.breakdown:
            sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return t1, t2

    def steps():
        for it in range(a.warmup + a.steps):
            if it == a.warmup and dev.type == "cuda":
                sync()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            t1, t2 = step()
            t3 = time.perf_counter()
            if it >= a.warmup:
                times.append(t3 - t0)
                if a.breakdown:
                    phases["forward"].append(t1 - t0)
                    phases["backward"].append(t2 - t1)
                    phases["optimizer"].append(t3 - t2)

    try:
        steps()
    except Exception as e:  # noqa: BLE001
        if a.variant != "compiled":
            raise
        # torch.compile exists but cannot handle the model here: say why and let the tool go on.
        traceback.print_exc()
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        emit({"ok": False, "variant": a.variant, "torch_version": torch.__version__,
              "unavailable": f"torch.compile failed in torch {torch.__version__}: {type(e).__name__}: {first_line}"})
        return
    tensor_peak = None
    if make_meter:
        # One more step, metered (the meter's own cost stays out of the timed steps).
        m = make_meter(baseline)
        with m:
            step()
        tensor_peak = m.peak_bytes()
    elif dev.type == "cpu" and a.variant == "eager":
        notes.append("CPU tensor memory not metered: needs glibc's mallinfo2 and TorchDispatchMode")
    out = {"ok": True, "variant": a.variant, "torch_version": torch.__version__, "device": dev.type,
           "precision": a.precision, "threads": torch.get_num_threads(), "times": times,
           "max_rss_bytes": max_rss_bytes(), "notes": notes}
    if a.breakdown:
        out["phases"] = phases
    if tensor_peak is not None:
        out["tensor_peak_bytes"] = tensor_peak
    if dev.type == "cuda":
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        out["tf32"] = torch.backends.cuda.matmul.allow_tf32
    emit(out)


if __name__ == "__main__":
    main()
