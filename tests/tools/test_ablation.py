"""fgmoe-ablation on a tiny synthetic dataset: the four arms train with the
method's settings switched as the paper's ablation does, the table's means and
standard deviations are those of the runs' final evaluations, alignment is read
from the last Soft MoE layer, a second invocation reuses the finished runs, and
mistakes stop it with a message naming the file or the arm."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish  # noqa: E402

# Eleven layers, the last two Soft MoE (layers 9 and 10): "layer10" must win
# over "layer9" as the last layer although it sorts first as text.
CONFIG = {
    "DATA": {"IMG_SIZE": 32, "BATCH_SIZE": 16, "NUM_WORKERS": 1},
    "MODEL": {"NAME": "abl", "NUM_CLASSES": 3,
              "SOFT_MOE": {"PATCH_SIZE": 8, "EMBED_DIM": 16, "DEPTH": 11, "NUM_HEADS": 2, "MLP_DIM": 32,
                           "MOE_LAYERS": 2, "NUM_EXPERTS": 4, "LAYER_SCALE_LAYERS": [10], "AUX_LAYER": 10}},
    "TRAIN": {"EPOCHS": 1, "WARMUP_EPOCHS": 0, "BASE_LR": 0.01},
    "AUG": {"MIXUP": 0.0, "CUTMIX": 0.0},
    "PRINT_FREQ": 5, "DEVICE": "cpu",
}
ARMS = {  # name: (label, LayerScale layers, auxiliary layer)
    "baseline": ("Soft MoE baseline", [], -1),
    "fgloss": ("+ foreground loss", [], 10),
    "layerscale": ("+ LayerScale", [10], -1),
    "both": ("+ both (the method)", [10], 10),
}
SEEDS = ["1", "2"]


def run(args):
    return subprocess.run(args, capture_output=True, text=True)


def last_eval(path):
    evals = [r for r in map(json.loads, open(path)) if r["kind"] == "eval"]
    return evals[-1] if evals else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--synth", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        r = run([a.synth, "--out", data, "--classes", "3", "--train-per-class", "16", "--val-per-class", "4",
                 "--size", "32", "--seed", "5", "--val-masks", "--quiet"])
        check(r.returncode == 0, "fgmoe-synth made a dataset: " + r.stderr[-300:])
        cfg = os.path.join(tmp, "cfg.json")
        json.dump(CONFIG, open(cfg, "w"))
        out = os.path.join(tmp, "out")
        cmd = [a.tool, "--cfg", cfg, "--data-path", data, "--output", out, "--seeds", ",".join(SEEDS),
               "--trainer", a.train]

        # ---- mistakes ----
        bad = os.path.join(tmp, "bad.json")
        open(bad, "w").write('{"MODEL": ')
        r = run([a.tool, "--cfg", bad, "--data-path", data, "--output", out, "--trainer", a.train])
        check(r.returncode == 1 and "bad.json: invalid JSON" in r.stderr, "invalid JSON names the file: " + r.stderr)
        r = run(cmd + ["--arms", "baseline,fancy"])
        check(r.returncode == 1 and "unknown arm 'fancy'" in r.stderr, "an unknown arm is named: " + r.stderr)
        r = run([a.tool, "--cfg", os.path.join(tmp, "none.json"), "--data-path", data, "--trainer", a.train])
        check(r.returncode == 1 and "none.json" in r.stderr, "a missing config is named: " + r.stderr)

        # ---- the study ----
        r = run(cmd)
        check(r.returncode == 0, "the four arms train: " + r.stderr[-800:])
        progress = re.findall(r"^== (.*), seed (\d) \(run (\d+) of 8(, about \d+:\d\d:\d\d left)?\)$", r.stderr, re.M)
        check([int(p[2]) for p in progress] == list(range(1, 9)) and not progress[0][3]
              and all(p[3] for p in progress[1:]),
              "each run is announced with its number of 8 and, after the first, the time left: %s" % progress)
        results = json.load(open(os.path.join(out, "ablation.json")))
        check(sorted((x["arm"], x["seed"]) for x in results) == sorted((n, s) for n in ARMS for s in SEEDS),
              "ablation.json holds one record per arm and seed")
        table = open(os.path.join(out, "ablation.md")).read()
        check(table in r.stdout, "the table is printed and written to ablation.md")
        for name, (label, layer_scale, aux) in ARMS.items():
            accs, qs, ious = [], [], []
            for seed in SEEDS:
                run_dir = os.path.join(out, "abl", name + "-seed" + seed)
                saved = json.load(open(os.path.join(run_dir, "config.json")))
                moe = saved["MODEL"]["SOFT_MOE"]
                check(moe["LAYER_SCALE_LAYERS"] == layer_scale and moe["AUX_LAYER"] == aux
                      and saved["SEED"] == int(seed),
                      "%s seed %s trained with LayerScale %s, auxiliary layer %s" % (name, seed, layer_scale, aux))
                ev = last_eval(os.path.join(run_dir, "metrics.jsonl"))
                record = next(x for x in results if x["arm"] == name and x["seed"] == seed)
                check(ev is not None and record["acc1"] == ev["acc1"]
                      and record["q"] == ev["alignment_q_layer10"] and record["iou"] == ev["alignment_iou_layer10"],
                      "%s seed %s: the record is the final evaluation's, alignment of layer 10" % (name, seed))
                accs.append(ev["acc1"])
                qs.append(ev["alignment_q_layer10"])
                ious.append(ev["alignment_iou_layer10"])
            row = next((l for l in table.splitlines() if l.startswith("| " + label + " |")), "")
            want = "| %s | %.2f +- %.2f | %d | %.3f +- %.3f | %.3f +- %.3f |" % (
                label, statistics.mean(accs), statistics.stdev(accs), len(SEEDS), statistics.mean(qs),
                statistics.stdev(qs), statistics.mean(ious), statistics.stdev(ious))
            check(row == want, "the %s row is the runs' mean +- sample std: %r (expected %r)" % (name, row, want))

        # ---- a second invocation reuses the finished runs ----
        before = {n: os.path.getmtime(os.path.join(out, "abl", n + "-seed1", "metrics.jsonl")) for n in ARMS}
        r2 = run(cmd)
        after = {n: os.path.getmtime(os.path.join(out, "abl", n + "-seed1", "metrics.jsonl")) for n in ARMS}
        check(r2.returncode == 0 and r2.stdout.endswith(table) and r.stdout.endswith(table) and before == after,
              "a second invocation reuses the finished runs and prints the same table")
    finish("fgmoe-ablation OK")


if __name__ == "__main__":
    main()
