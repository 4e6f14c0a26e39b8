"""fgmoe-train end to end on a tiny synthetic dataset: it learns, writes its
log, metrics, config and checkpoints; config mistakes stop it with a message
naming the key; and a run killed with SIGKILL, started again with the same
command, ends with the same weights as an uninterrupted run."""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

try:
    import torch
except ImportError:
    sys.exit(77)

CONFIG = {
    "DATA": {"IMG_SIZE": 32, "BATCH_SIZE": 16, "NUM_WORKERS": 2},
    "MODEL": {"NAME": "cli", "NUM_CLASSES": 4,
              "SOFT_MOE": {"PATCH_SIZE": 8, "EMBED_DIM": 48, "DEPTH": 2, "NUM_HEADS": 2, "MLP_DIM": 96,
                           "MOE_LAYERS": 1, "NUM_EXPERTS": 8, "LAYER_SCALE_LAYERS": [1], "AUX_LAYER": 1}},
    "TRAIN": {"EPOCHS": 8, "WARMUP_EPOCHS": 1, "BASE_LR": 0.02, "WARMUP_LR": 1e-5, "MIN_LR": 1e-4},
    "AUG": {"MIXUP": 0.0, "CUTMIX": 0.0},
    "PRINT_FREQ": 5, "SAVE_FREQ": 2, "DEVICE": "cpu",
}

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish  # noqa: E402


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def final_weights(run_dir):
    path = os.path.join(run_dir, "ckpt_epoch_%d.pth" % (CONFIG["TRAIN"]["EPOCHS"] - 1))
    # A full checkpoint holds Python floats (learning rate, accuracy); torch 1.x's
    # weights_only loader has no opcode for floats, torch 2.x reads them.
    weights_only = int(torch.__version__.split(".")[0]) >= 2
    return torch.load(path, weights_only=weights_only)["model"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--synth", required=True)
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        r = run([a.synth, "--out", data, "--classes", "4", "--train-per-class", "40", "--val-per-class", "10",
                 "--size", "32", "--seed", "3", "--quiet"])
        check(r.returncode == 0, "fgmoe-synth made a dataset: " + r.stderr[-300:])
        cfg = os.path.join(tmp, "cfg.json")
        json.dump(CONFIG, open(cfg, "w"))
        base = [a.train, "--cfg", cfg, "--data-path", data, "--output", os.path.join(tmp, "out")]

        # ---- config mistakes name the key ----
        r = run(base + ["--opts", "TRAIN.BASE_LRR", "1"], env=env)
        check(r.returncode != 0 and "TRAIN.BASE_LRR" in r.stderr, "an unknown --opts key is named")
        r = run(base + ["--opts", "DATA.IMG_SIZE", "big"], env=env)
        check(r.returncode != 0 and "DATA.IMG_SIZE" in r.stderr, "a value of the wrong type is named")
        bad_cfg = os.path.join(tmp, "bad.json")
        json.dump({"AUG": {"MIXUPP": 0.1}}, open(bad_cfg, "w"))
        r = run([a.train, "--cfg", bad_cfg, "--data-path", data], env=env)
        check(r.returncode != 0 and "AUG.MIXUPP" in r.stderr and "bad.json" in r.stderr,
              "an unknown key in a config file is named with the file")
        r = run([a.train, "--cfg", cfg, "--data-path", os.path.join(tmp, "nowhere")], env=env)
        check(r.returncode != 0 and "nowhere" in r.stderr, "a missing data folder is named")
        r = run([a.train, "--help"])
        check(r.returncode == 0 and "TRAIN.BASE_LR" in r.stdout and "--accumulation-steps" in r.stdout,
              "--help documents flags and config keys")

        # ---- end to end ----
        r = run(base + ["--tag", "whole", "--opts", "SAVE_STEPS", "4"], env=env)
        check(r.returncode == 0, "a whole run finishes: " + r.stderr[-500:])
        run_dir = os.path.join(tmp, "out", "cli", "whole")
        for name in ["log.txt", "metrics.jsonl", "config.json", "ckpt_epoch_7.pth"]:
            check(os.path.exists(os.path.join(run_dir, name)), "the run wrote " + name)
        records = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
        train = [x for x in records if x["kind"] == "train"]
        evals = [x for x in records if x["kind"] == "eval"]
        check(len(train) == 8 and train[-1]["loss"] < train[0]["loss"],
              "the training loss falls (%.3f -> %.3f)" % (train[0]["loss"], train[-1]["loss"]))
        check(max(x["acc1"] for x in evals) > 50.0,
              "validation accuracy beats chance (25%%): best %.1f%%" % max(x["acc1"] for x in evals))
        log = open(os.path.join(run_dir, "log.txt")).read()
        check(" * Acc@1 " in log and "grad_norm" in log and "eta" in log, "the log has the reference's fields")

        # ---- SIGKILL and resume ----
        resumed_dir = os.path.join(tmp, "out", "cli", "killed")
        cmd = base + ["--tag", "killed", "--opts", "SAVE_STEPS", "4"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        target = os.path.join(resumed_dir, "ckpt_epoch_2.pth")
        while time.time() < deadline and not os.path.exists(target) and proc.poll() is None:
            time.sleep(0.01)
        # Kill soon after the epoch-2 checkpoint lands, somewhere in epoch 3; a fast
        # machine runs a whole epoch of this tiny task in a fraction of a second, so
        # the margin must stay small.
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check(proc.returncode == -signal.SIGKILL,
              "the run was killed mid-training (exit status %s)" % proc.returncode)
        r = run(cmd, env=env)
        check(r.returncode == 0 and "auto resuming from" in r.stdout, "the same command resumes: " + r.stderr[-300:])
        a_w, b_w = final_weights(run_dir), final_weights(resumed_dir)
        worst = max((a_w[k] - b_w[k]).abs().max().item() for k in a_w)
        check(worst == 0.0, "the resumed run ends with the same weights (max difference %g)" % worst)
    finish("fgmoe-train command line OK")


if __name__ == "__main__":
    main()
