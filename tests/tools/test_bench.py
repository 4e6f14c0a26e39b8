"""fgmoe-bench on a tiny model: the JSON record holds every field with sane
values (positive times, ordered statistics, ratios equal to the peer's median
over fgmoe's), once through the data loader on a tiny synthetic dataset and,
when torch is installed, once against the PyTorch peer (CPU tensor peaks of
both sides included)."""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

TINY = ["--model", "soft_moe_32", "--image-size", "32", "--patch-size", "8", "--depth", "2", "--width", "32",
        "--heads", "2", "--ffn-width", "48", "--experts", "4", "--batch", "2", "--steps", "2", "--warmup", "1",
        "--threads", "2", "--breakdown"]

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


def check_stats(s, where):
    for key in ("median_s", "min_s", "max_s", "q1_s", "q3_s", "iqr_s"):
        check(isinstance(s.get(key), (int, float)) and math.isfinite(s[key]), f"{where}.{key} missing")
    if failures:
        return
    check(0 < s["min_s"] <= s["q1_s"] <= s["median_s"] <= s["q3_s"] <= s["max_s"], f"{where}: statistics out of order {s}")
    check(abs(s["iqr_s"] - (s["q3_s"] - s["q1_s"])) < 1e-12, f"{where}: iqr is not q3 - q1")
    check(len(s.get("times_s", [])) == 2 and all(t > 0 for t in s["times_s"]), f"{where}: expected 2 positive times")


def check_side(j, key, batch):
    s = j.get(key)
    check(s is not None and s.get("available"), f"{key} missing or unavailable")
    if not s or not s.get("available"):
        return
    check_stats(s, key)
    if failures:
        return
    check(abs(s["images_per_s"] - batch / s["median_s"]) < 1e-6 * s["images_per_s"], f"{key}: images/s != batch / median")
    check(abs(s["achieved_tflops"] - j["flops"]["step"] / s["median_s"] / 1e12) < 1e-9 + 1e-6 * s["achieved_tflops"],
          f"{key}: achieved TFLOP/s inconsistent")
    check(s.get("max_rss_bytes", 0) > 0, f"{key}: no max RSS")
    for phase in ("forward", "backward", "optimizer"):
        check(phase in s.get("phases", {}), f"{key}: phase {phase} missing")
        if phase in s.get("phases", {}):
            check_stats(s["phases"][phase], f"{key}.phases.{phase}")


def run(tool, args, json_path):
    done = subprocess.run([tool] + args + ["--json", json_path], capture_output=True, text=True, timeout=240)
    print(done.stdout)
    if done.returncode != 0:
        failures.append(f"{' '.join(args)} exited {done.returncode}: {done.stderr}")
        return None
    with open(json_path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--synth", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # Bad flags fail clearly.
        bad = subprocess.run([a.tool, "--batch", "0"], capture_output=True, text=True)
        check(bad.returncode != 0 and "--batch" in bad.stderr, f"--batch 0 accepted: {bad.stderr}")
        bad = subprocess.run([a.tool, "--precision", "bf16"], capture_output=True, text=True)
        check(bad.returncode != 0 and "CUDA" in bad.stderr, f"bf16 on the CPU accepted: {bad.stderr}")
        bad = subprocess.run([a.tool, "--attention", "flash"], capture_output=True, text=True)
        check(bad.returncode != 0 and "--attention" in bad.stderr, f"--attention flash accepted: {bad.stderr}")
        bad = subprocess.run([a.tool, "--compile-mode", "fastest"], capture_output=True, text=True)
        check(bad.returncode != 0 and "--compile-mode" in bad.stderr and "fastest" in bad.stderr,
              f"--compile-mode fastest accepted: {bad.stderr}")

        # A peer that cannot run (here a "Python" that exits 1) is reported in the
        # table and fails the run with status 3, after fgmoe's numbers were printed and saved.
        failed_json = os.path.join(tmp, "failed_peer.json")
        done = subprocess.run([a.tool] + TINY + ["--compare-pytorch", "--python", "/bin/false", "--json", failed_json],
                              capture_output=True, text=True, timeout=240)
        check(done.returncode == 3, f"a failed peer gave exit status {done.returncode}: {done.stderr}")
        check("failed: exited with status 1" in done.stdout, f"the failed peer is not in the table: {done.stdout}")
        if os.path.exists(failed_json):
            with open(failed_json) as f:
                fj = json.load(f)
            check(fj.get("fgmoe", {}).get("available") is True, "fgmoe's own numbers missing after a failed peer")
        else:
            check(False, "no JSON written after a failed peer")

        # The composite attention path runs and says so.
        j = run(a.tool, TINY + ["--attention", "composite"], os.path.join(tmp, "composite.json"))
        if j is not None:
            check(j["config"].get("attention") == "composite", "attention choice not recorded")
            check_side(j, "fgmoe", 2)

        # Through the loader on a tiny synthetic dataset.
        data = os.path.join(tmp, "data")
        subprocess.run([a.synth, "--out", data, "--classes", "3", "--train-per-class", "4", "--val-per-class", "1",
                        "--size", "40", "--quiet", "--threads", "1"], check=True)
        j = run(a.tool, TINY + ["--data-path", data, "--workers", "1"], os.path.join(tmp, "data.json"))
        if j is not None:
            check(j["config"]["classes"] == 3 and j["config"]["data"] == "loader", "dataset classes not taken")
            check_side(j, "fgmoe", 2)
            d = j.get("data", {})
            check(d.get("images") == 12 and d.get("workers") == 1, f"data section wrong: {d}")
            check(d.get("loader_images_per_s", 0) > 0 and d.get("end_to_end_images_per_s", 0) > 0, "data rates missing")
            check(isinstance(d.get("keeps_up"), bool), "keeps_up missing")
            check(d.get("keeps_up") == (d.get("loader_images_per_s", 0) >= d.get("step_images_per_s", 0)),
                  "keeps_up inconsistent with the rates")
            check("pytorch_eager" not in j and j.get("ratios") == {}, "a peer ran without --compare-pytorch")

        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is missing: the comparison with PyTorch was skipped")
            print("\n".join(failures) or "loader run OK")
            sys.exit(1 if failures else 77)

        # Against the PyTorch peer, eager and (where the torch has it) compiled;
        # --compile-mode implies --compare-pytorch and --compile.
        j = run(a.tool, TINY + ["--classes", "10", "--compile-mode", "reduce-overhead"], os.path.join(tmp, "peer.json"))
        if j is not None:
            check(j["config"].get("compile_mode") == "reduce-overhead", f"compile mode not recorded: {j['config']}")
            f = j["flops"]
            check(f["forward_per_image"] > 0 and abs(f["step_per_image"] - 3 * f["forward_per_image"]) < 1e-6 * f["step_per_image"]
                  and abs(f["step"] - 2 * f["step_per_image"]) < 1e-6 * f["step"], f"FLOP counts inconsistent: {f}")
            check(j["config"]["model_config"]["depth"] == 2 and j["config"]["model_config"]["aux_layer"] == 1,
                  "overrides not applied")
            check(len(j["machine"]["load_average_before"]) == 3, "load average missing")
            check_side(j, "fgmoe", 2)
            check(j["fgmoe"].get("tensor_peak_bytes", 0) > 0, "fgmoe tensor peak missing on the CPU")
            check_side(j, "pytorch_eager", 2)
            # Both tensor peaks hold at least the float32 weights, their gradients and
            # AdamW's two moments: a meter that started counting late falls below.
            static = 4 * 4 * j["config"]["parameters"]
            for key in ("fgmoe", "pytorch_eager"):
                peak = j.get(key, {}).get("tensor_peak_bytes", 0)
                check(static < peak < 50 * static, f"{key}: tensor peak {peak} not above 4 x 4 bytes per parameter")
            if not failures:
                r = j["ratios"].get("eager")
                check(r is not None and abs(r - j["pytorch_eager"]["median_s"] / j["fgmoe"]["median_s"]) < 1e-9 * r,
                      f"ratio is not peer median / fgmoe median: {j['ratios']}")
                compiled = j.get("pytorch_compiled", {})
                if compiled.get("available"):
                    check_side(j, "pytorch_compiled", 2)
                    check("compiled" in j["ratios"], "compiled ratio missing")
                else:
                    reason = compiled.get("reason", "")
                    check("torch.compile not available in torch" in reason or "torch.compile failed" in reason,
                          f"compiled peer neither ran nor said why: {compiled}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
