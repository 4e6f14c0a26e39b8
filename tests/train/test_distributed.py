"""fgmoe-train with several processes on the CPU.

- Two ranks (mpirun, and the built-in --nproc-per-node launcher over TCP) end
  with the weights of one rank that trains on the doubled batch. The sample
  order matches by construction: with DistributedSampler semantics rank r
  takes positions r, r+2, ... of the epoch order, so step k of the two ranks
  covers exactly the 2B positions of step k of the single rank, and the
  per-sample augmentation is seeded by (seed, epoch, position in the epoch
  order), not by rank. What is drawn per rank is switched off: dropout,
  mixup/cutmix (seeded per batch and rank) and the foreground term (averaged
  per rank over the samples that have foreground, which differs from one
  average over the doubled batch).
- A rank killed with SIGKILL makes the others exit non-zero, within the
  timeout (torchrun-style launch, the built-in launcher, and mpirun).
- A rendezvous that never completes ends with a clear message in time.
- A two-rank run stopped after a checkpoint and started again with the same
  command ends with the weights of an uninterrupted two-rank run.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

try:
    import torch
except ImportError:
    sys.exit(77)

EPOCHS = 2
SPLIT_TOLERANCE = 5e-5  # one rank with batch 8 against two with batch 4, largest weight difference
CONFIG = {
    "DATA": {"IMG_SIZE": 32, "BATCH_SIZE": 4, "NUM_WORKERS": 1},
    "MODEL": {"NAME": "dist", "NUM_CLASSES": 4,
              "SOFT_MOE": {"PATCH_SIZE": 8, "EMBED_DIM": 48, "DEPTH": 2, "NUM_HEADS": 2, "MLP_DIM": 96,
                           "MOE_LAYERS": 1, "NUM_EXPERTS": 8, "LAYER_SCALE_LAYERS": [1], "AUX_LAYER": -1,
                           "DROPOUT": 0.0}},
    "TRAIN": {"EPOCHS": EPOCHS, "WARMUP_EPOCHS": 1, "BASE_LR": 0.02, "WARMUP_LR": 1e-5, "MIN_LR": 1e-4},
    "AUG": {"MIXUP": 0.0, "CUTMIX": 0.0},
    "PRINT_FREQ": 2, "SAVE_FREQ": 1, "DEVICE": "cpu",
}
# Rank-dependent randomness on: dropout and the foreground term, for the resume test.
RESUME_OPTS = ["MODEL.SOFT_MOE.DROPOUT", "0.1", "MODEL.SOFT_MOE.AUX_LAYER", "1", "TRAIN.EPOCHS", "6",
               "SAVE_STEPS", "2"]
TIMEOUT = 4  # FGMOE_DIST_TIMEOUT in the failure tests, seconds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish  # noqa: E402


def run(args, timeout=300, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def load(path):
    weights_only = int(torch.__version__.split(".")[0]) >= 2
    return torch.load(path, weights_only=weights_only)["model"]


def max_difference(a_path, b_path):
    a, b = load(a_path), load(b_path)
    if a.keys() != b.keys():
        return float("inf")
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def wait_for(condition, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def training_started(run_dir):
    log = os.path.join(run_dir, "log.txt")
    return lambda: os.path.exists(log) and "Train: [1/" in open(log).read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--synth", required=True)
    a = ap.parse_args()
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
                and not k.startswith("OMPI_") and not k.startswith("PMIX")}
    env = dict(base_env, OMP_NUM_THREADS="1")
    help_text = run([a.train, "--help"]).stdout
    mpirun = shutil.which("mpirun")
    with_mpi = mpirun is not None and "MPI" in help_text.split("distributed support:")[-1]
    mpi_flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    # Quiet and robust inside containers: shared memory without cross-process ptrace.
    mpi_env = dict(env, OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_rmaps_base_oversubscribe="1")

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        # 32 training images: 4 steps of 4 per rank with two ranks, 4 of 8 with one.
        r = run([a.synth, "--out", data, "--classes", "4", "--train-per-class", "8", "--val-per-class", "2",
                 "--size", "32", "--seed", "3", "--quiet"])
        check(r.returncode == 0, "fgmoe-synth made a dataset: " + r.stderr[-300:])
        cfg = os.path.join(tmp, "cfg.json")
        json.dump(CONFIG, open(cfg, "w"))
        out = os.path.join(tmp, "out")
        base = [a.train, "--cfg", cfg, "--data-path", data, "--output", out]

        def run_dir(tag):
            return os.path.join(out, "dist", tag)

        def final(tag, epochs=EPOCHS):
            return os.path.join(run_dir(tag), "ckpt_epoch_%d.pth" % (epochs - 1))

        # ---- one rank, batch 8: the reference ----
        r = run(base + ["--tag", "one", "--batch-size", "8"], env=env)
        check(r.returncode == 0 and os.path.exists(final("one")), "one rank with batch 8 trains: " + r.stderr[-300:])

        # ---- two ranks over TCP, built-in launcher ----
        start = time.time()
        r = run(base + ["--tag", "tcp", "--nproc-per-node", "2"], env=env)
        check(r.returncode == 0 and os.path.exists(final("tcp")),
              "--nproc-per-node 2 trains (%.1f s): %s" % (time.time() - start, r.stderr[-500:]))
        log = open(os.path.join(run_dir("tcp"), "log.txt")).read()
        check("2 process(es), TCP" in log, "the log names two processes and the TCP backend")
        if os.path.exists(final("tcp")):
            d = max_difference(final("one"), final("tcp"))
            # Two half-batch means averaged are not summed in the one-rank order: float32
            # rounding (and the compiler's FMA contraction at other optimization levels)
            # moves the last bits; a wrong average would move the weights by far more.
            check(d <= SPLIT_TOLERANCE, "two TCP ranks with batch 4 match one rank with batch 8 (max difference %g)" % d)
        only_rank0 = [f for f in os.listdir(run_dir("tcp")) if f.endswith(".tmp")]
        check(not only_rank0, "no partial checkpoint files are left")

        # ---- torchrun's static rendezvous keeps its store on MASTER_PORT: fgmoe uses the next port ----
        with socket.socket() as store:
            store.bind(("127.0.0.1", 0))
            store.listen(4)
            port = store.getsockname()[1]
            procs = [subprocess.Popen(base + ["--tag", "agent_store"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True,
                                      env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                                               TORCHELASTIC_USE_AGENT_STORE="True", FGMOE_DIST_TIMEOUT="60"))
                     for rank in range(2)]
            codes = [p.wait(timeout=300) for p in procs]
            errs = [p.stderr.read() for p in procs]
        check(codes == [0, 0] and max_difference(final("tcp"), final("agent_store")) == 0.0,
              "ranks started as torchrun's static rendezvous starts them train alike: " + " ".join(errs)[-300:])

        # ---- two ranks with mpirun ----
        if with_mpi:
            r = run([mpirun, "-np", "2"] + mpi_flags + base + ["--tag", "mpi"], env=mpi_env)
            check(r.returncode == 0 and os.path.exists(final("mpi")), "mpirun -np 2 trains: " + r.stderr[-500:])
            if os.path.exists(final("mpi")):
                log = open(os.path.join(run_dir("mpi"), "log.txt")).read()
                check("2 process(es), MPI" in log, "the log names two processes and the MPI backend")
                d = max_difference(final("one"), final("mpi"))
                check(d <= SPLIT_TOLERANCE, "two MPI ranks with batch 4 match one rank with batch 8 (max difference %g)" % d)
                d = max_difference(final("tcp"), final("mpi"))
                check(d == 0.0, "MPI and TCP ranks end bit-identical (max difference %g)" % d)
        else:
            print("skip mpirun tests: " + ("fgmoe-train built without MPI" if mpirun else "no mpirun"))

        long_run = ["--opts", "TRAIN.EPOCHS", "100000"]
        fail_env = dict(env, FGMOE_DIST_TIMEOUT=str(TIMEOUT))

        # ---- a rendezvous that never completes ----
        port = free_port()
        for rank in ("0", "1"):
            start = time.time()
            r = run(base + ["--tag", "alone" + rank], timeout=60,
                    env=dict(fail_env, RANK=rank, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
            took = time.time() - start
            expected = "rendezvous" if rank == "0" else "could not reach rank 0"
            check(r.returncode != 0 and expected in r.stderr and "FGMOE_DIST_TIMEOUT" in r.stderr
                  and took < TIMEOUT + 10,
                  "rank %s alone gives up after %.1f s: %s" % (rank, took, r.stderr.strip()[-300:]))

        # ---- torchrun-style launch: SIGKILL rank 1, rank 0 must fail soon ----
        port = str(free_port())
        procs = [subprocess.Popen(base + ["--tag", "killed"] + long_run, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True,
                                  env=dict(fail_env, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
                 for rank in range(2)]
        started = wait_for(training_started(run_dir("killed")), 60)
        procs[1].kill()
        killed_at = time.time()
        try:
            procs[0].wait(timeout=TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            procs[0].kill()
            procs[0].wait()
        took = time.time() - killed_at
        err = procs[0].stderr.read()
        procs[1].wait()
        check(started and procs[0].returncode not in (0, None) and "rank 1" in err and took < TIMEOUT + 10,
              "rank 0 fails %.1f s after rank 1 was killed (status %s): %s" % (took, procs[0].returncode,
                                                                               err.strip()[-300:]))

        # ---- the built-in launcher: SIGKILL one rank, the launcher stops the other and fails ----
        launcher = subprocess.Popen(base + ["--tag", "launcher_killed", "--nproc-per-node", "2"] + long_run,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=fail_env)
        started = wait_for(training_started(run_dir("launcher_killed")), 60)
        kids = children(launcher.pid)
        if kids:
            os.kill(max(kids), signal.SIGKILL)  # the later-started child: rank 1
        killed_at = time.time()
        try:
            launcher.wait(timeout=TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
        took = time.time() - killed_at
        err = launcher.stderr.read()
        check(started and len(kids) == 2 and launcher.returncode != 0 and "rank 1" in err
              and "signal 9" in err and took < TIMEOUT + 10 and not children(launcher.pid),
              "the launcher fails %.1f s after a rank was killed, naming it (status %s): %s"
              % (took, launcher.returncode, err.strip()[-300:]))

        # ---- mpirun: SIGKILL one rank, mpirun ends the job ----
        if with_mpi:
            job = subprocess.Popen([mpirun, "-np", "2"] + mpi_flags + base + ["--tag", "mpi_killed"] + long_run,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=mpi_env)
            started = wait_for(training_started(run_dir("mpi_killed")), 60)
            ranks = [p for p in children(job.pid)]
            if ranks:
                os.kill(ranks[-1], signal.SIGKILL)
            killed_at = time.time()
            try:
                job.wait(timeout=60)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()
            took = time.time() - killed_at
            check(started and ranks and job.returncode != 0 and took < 30,
                  "mpirun ends the job %.1f s after a rank was killed (status %s)" % (took, job.returncode))

        # ---- stop a two-rank run after a checkpoint, rerun, compare with an uninterrupted one ----
        r = run(base + ["--tag", "whole", "--nproc-per-node", "2", "--opts"] + RESUME_OPTS, env=env)
        check(r.returncode == 0, "an uninterrupted two-rank run with dropout and the foreground term: "
              + r.stderr[-300:])
        cmd = base + ["--tag", "resumed", "--nproc-per-node", "2", "--opts"] + RESUME_OPTS
        stopped = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        first_ckpt = os.path.join(run_dir("resumed"), "ckpt_last.pth")
        wait_for(lambda: os.path.exists(first_ckpt), 120)
        kids = children(stopped.pid)
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped.wait(timeout=60)
        stopped.stderr.read()
        check(stopped.returncode != 0, "the two-rank run was killed mid-training (status %s)" % stopped.returncode)
        r = run(cmd, env=env)
        check(r.returncode == 0 and "auto resuming from" in r.stdout,
              "the same command resumes: " + r.stderr[-300:])
        if r.returncode == 0:
            d = max_difference(final("whole", 6), final("resumed", 6))
            check(d == 0.0, "the resumed two-rank run ends with the same weights (max difference %g)" % d)

        # ---- SIGTERM to the launcher: every rank stops at the same step, rank 0 saves ----
        cmd = base + ["--tag", "interrupted", "--nproc-per-node", "2", "--opts"] + RESUME_OPTS
        stopped = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wait_for(training_started(run_dir("interrupted")), 120)
        stopped.send_signal(signal.SIGTERM)
        stopped.wait(timeout=60)
        stopped.stderr.read()
        interrupted = os.path.join(run_dir("interrupted"), "ckpt_interrupted.pth")
        check(stopped.returncode == 130 and os.path.exists(interrupted),
              "SIGTERM to the launcher stops both ranks with ckpt_interrupted.pth (status %s)" % stopped.returncode)
        r = run(cmd, env=env)
        check(r.returncode == 0 and "ckpt_interrupted.pth" in r.stdout, "the same command resumes: " + r.stderr[-300:])
        if r.returncode == 0:
            d = max_difference(final("whole", 6), final("interrupted", 6))
            check(d == 0.0, "the run resumed after SIGTERM ends with the same weights (max difference %g)" % d)

    finish("distributed training OK")


if __name__ == "__main__":
    main()
