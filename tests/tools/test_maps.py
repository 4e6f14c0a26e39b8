"""fgmoe-maps end to end: a tiny synthetic dataset with validation masks, a
checkpoint trained for one epoch, figures for single images and a folder.
Checks that the PNGs are valid, have the size the documented layout gives,
show a heat map that differs from the plain image and the mask outline, that
the contact sheet has the expected grid, that the summary's q and IoU are in
[0, 1], and that bad inputs fail with a message naming the file."""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    from PIL import Image, ImageStat
except ImportError:
    sys.exit(77)

CONFIG = {
    "DATA": {"IMG_SIZE": 32, "BATCH_SIZE": 8, "NUM_WORKERS": 1},
    "MODEL": {"NAME": "maps", "NUM_CLASSES": 3,
              "SOFT_MOE": {"PATCH_SIZE": 8, "EMBED_DIM": 32, "DEPTH": 3, "NUM_HEADS": 2, "MLP_DIM": 48,
                           "MOE_LAYERS": 2, "NUM_EXPERTS": 6, "LAYER_SCALE_LAYERS": [2], "AUX_LAYER": 2}},
    "TRAIN": {"EPOCHS": 1, "WARMUP_EPOCHS": 0},
    "AUG": {"MIXUP": 0.0, "CUTMIX": 0.0},
    "DEVICE": "cpu",
}
MOE_LAYERS = [1, 2]
M = 8  # margin
OUTLINE = (255, 20, 20)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, failures, finish  # noqa: E402


def run(args):
    return subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))


def figure_size(panel, k, layers):
    f = 2 if panel >= 160 else 1
    line = 9 * f
    label, title = 2 * line + 4, 2 * line + M
    return M + (k + 2) * (panel + M) + 16 + 18 * f + M, M + title + layers * (label + panel + M)


def sheet_size(tile, images, max_columns):
    f = 2 if tile >= 160 else 1
    line = 9 * f
    columns = min(images, max_columns)
    rows = (images + columns - 1) // columns
    return M + columns * (tile + M), M + line + M + rows * (2 * line + 4 + tile + M)


def valid_png(path):
    try:
        with Image.open(path) as im:
            im.verify()
        im = Image.open(path)
        return im.format == "PNG", im.convert("RGB")
    except Exception as e:  # noqa: BLE001
        print(f"     {path}: {e}")
        return False, None


def check_figure(path, panel, k, has_mask):
    ok, im = valid_png(path)
    check(ok, f"{os.path.basename(path)} is a valid PNG")
    if not ok:
        return
    expected = figure_size(panel, k, len(MOE_LAYERS))
    check(im.size == expected, f"{os.path.basename(path)} is {im.size}, layout says {expected}")
    check(max(ImageStat.Stat(im).var) > 0, "the figure is not blank")
    f = 2 if panel >= 160 else 1
    y = M + (18 * f + M) + (18 * f + 4)  # first row of panels
    raw = im.crop((M, y, M + panel, y + panel))
    mean_map = im.crop((M + panel + M, y, M + 2 * (panel + M) - M, y + panel))
    diff = sum(abs(a - b) for p, q in zip(raw.getdata(), mean_map.getdata()) for a, b in zip(p, q))
    diff /= panel * panel * 3
    check(diff > 5, f"the heat map changes the image (mean abs difference {diff:.1f} per channel)")
    check(max(ImageStat.Stat(mean_map).var) > 0, "the mean dispatch panel is not flat")
    outline = sum(1 for p in raw.getdata() if p == OUTLINE)
    if has_mask:
        check(outline > 0, f"the mask outline is drawn ({outline} pixels)")
    else:
        check(outline == 0, "no outline without a mask")


def parse_summary(stdout):
    rows = {}
    for m in re.finditer(r"layer (\d+)\s+mean q ([0-9.eE+-]+)\s+mean IoU ([0-9.eE+-]+)\s+over (\d+) images", stdout):
        rows[int(m.group(1))] = (float(m.group(2)), float(m.group(3)), int(m.group(4)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--maps", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--synth", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        r = run([a.synth, "--out", data, "--classes", "3", "--train-per-class", "6", "--val-per-class", "3",
                 "--size", "40", "--seed", "5", "--val-masks", "--quiet"])
        check(r.returncode == 0, "fgmoe-synth made a dataset with validation masks " + r.stderr[-300:])
        cfg = os.path.join(tmp, "cfg.json")
        json.dump(CONFIG, open(cfg, "w"))
        r = run([a.train, "--cfg", cfg, "--data-path", data, "--output", os.path.join(tmp, "runs"), "--tag", "t"])
        checkpoint = os.path.join(tmp, "runs", "maps", "t", "ckpt_epoch_0.pth")
        check(r.returncode == 0 and os.path.exists(checkpoint), "fgmoe-train wrote a checkpoint " + r.stderr[-500:])
        if failures:
            return
        base = [a.maps, "--cfg", cfg, "--checkpoint", checkpoint, "--device", "cpu"]

        # ---- single images: one with a mask (dataset layout), one without
        masked = os.path.join(data, "val", "class_001", "class_001_1.JPEG")
        plain = os.path.join(tmp, "plain.png")
        Image.frombytes("RGB", (50, 37), bytes((i * 7 + (i // 150) * 13) % 256 for i in range(50 * 37 * 3))).save(plain)
        out1 = os.path.join(tmp, "maps1")
        r = run(base + ["--images", masked, plain, "--out", out1, "--panel", "96", "--top-k", "3"])
        check(r.returncode == 0, "fgmoe-maps on two images " + r.stderr[-500:])
        print(r.stdout)
        check_figure(os.path.join(out1, "class_001_1_maps.png"), 96, 3, True)
        check_figure(os.path.join(out1, "plain_maps.png"), 96, 3, False)
        check("predicted class_" in r.stdout, "class names come from the dataset layout")
        summary = parse_summary(r.stdout)
        check(sorted(summary) == MOE_LAYERS, f"a summary line per Soft MoE layer: {summary}")
        check(all(0 <= q <= 1 and 0 <= iou <= 1 and n == 1 for q, iou, n in summary.values()),
              "q and IoU in [0, 1] over the one image with a mask")
        check(os.path.exists(os.path.join(out1, "contact_sheet.png")), "two images make a contact sheet")

        # ---- the default panel size (font scale 2), top-k beyond the expert count
        out2 = os.path.join(tmp, "maps2")
        r = run(base + ["--images", masked, "--out", out2, "--top-k", "9"])
        check(r.returncode == 0, "fgmoe-maps with the default panel " + r.stderr[-500:])
        check_figure(os.path.join(out2, "class_001_1_maps.png"), 224, 6, True)
        check(not os.path.exists(os.path.join(out2, "contact_sheet.png")), "one image makes no contact sheet")

        # ---- a dataset folder: evenly spaced images, masks found, contact sheet
        out3 = os.path.join(tmp, "maps3")
        r = run(base + ["--folder", data, "--max-images", "5", "--out", out3, "--panel", "64",
                        "--sheet-panel", "64", "--sheet-columns", "4"])
        check(r.returncode == 0, "fgmoe-maps on a dataset folder " + r.stderr[-500:])
        print(r.stdout)
        figures = sorted(f for f in os.listdir(out3) if f.endswith("_maps.png"))
        check(len(figures) == 5, f"5 figures written: {figures}")
        check(len({f.split("_")[1] for f in figures}) == 3, "the images cover every class")
        for f in figures:
            ok, im = valid_png(os.path.join(out3, f))
            check(ok and im.size == figure_size(64, 3, len(MOE_LAYERS)), f"{f} valid, {im.size if im else None}")
        ok, sheet = valid_png(os.path.join(out3, "contact_sheet.png"))
        check(ok, "the contact sheet is a valid PNG")
        if ok:
            expected = sheet_size(64, 5, 4)
            check(sheet.size == expected, f"contact sheet {sheet.size}, a 4 x 2 grid gives {expected}")
            check(max(ImageStat.Stat(sheet).var) > 0, "the contact sheet is not blank")
        summary = parse_summary(r.stdout)
        check(sorted(summary) == MOE_LAYERS and all(n == 5 for _, _, n in summary.values()),
              f"summary over the 5 images with masks: {summary}")
        check(all(0 <= q <= 1 and 0 <= iou <= 1 for q, iou, _ in summary.values()), "mean q and IoU in [0, 1]")
        check(all(os.path.join(out3, f) in r.stdout for f in figures), "the paths written are printed")

        # ---- errors name the file
        bad = os.path.join(tmp, "broken.JPEG")
        with open(bad, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 this is not a JPEG" + bytes(range(256)))
        r = run(base + ["--images", bad, "--out", os.path.join(tmp, "maps4")])
        check(r.returncode != 0 and "broken.JPEG" in r.stderr, "a corrupt image fails naming the file: " + r.stderr)
        r = run([a.maps, "--cfg", cfg, "--checkpoint", os.path.join(tmp, "missing.pth"), "--images", masked,
                 "--out", os.path.join(tmp, "maps5")])
        check(r.returncode != 0 and "missing.pth" in r.stderr, "a missing checkpoint is named: " + r.stderr)
        other = dict(CONFIG, MODEL=dict(CONFIG["MODEL"], SOFT_MOE=dict(CONFIG["MODEL"]["SOFT_MOE"], EMBED_DIM=16)))
        other_cfg = os.path.join(tmp, "other.json")
        json.dump(other, open(other_cfg, "w"))
        r = run([a.maps, "--cfg", other_cfg, "--checkpoint", checkpoint, "--images", masked,
                 "--out", os.path.join(tmp, "maps6")])
        check(r.returncode != 0 and "ckpt_epoch_0.pth" in r.stderr, "a checkpoint of another shape is named: "
              + r.stderr[:300])
    finish("fgmoe-maps OK")


if __name__ == "__main__":
    main()
