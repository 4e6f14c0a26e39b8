"""fgmoe-prepare end to end: a synthetic dataset of 500x375 JPEGs with (1, H, W)
bool masks, plus a small JPEG, a PNG, a corrupt file and an empty class
folder, copied with --shorter-side 128. Checks the resized images against
PIL's bicubic resize (exactly, at quality 100), the masks against PIL's nearest resize of the originals
(exactly), that everything else is copied byte for byte, that class folders
survive, that a second run keeps what is there and completes what is missing,
and that bad arguments fail with a message."""
import argparse
import filecmp
import io
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from PIL import Image
except ImportError:
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checks import check, finish  # noqa: E402


def run(args):
    return subprocess.run(args, capture_output=True, text=True)


def resized_size(width, height, shorter):
    if width <= height:
        return shorter, shorter * height // width
    return shorter * width // height, shorter


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--synth", required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "src"), os.path.join(tmp, "dst")
        r = run([args.synth, "--out", src, "--classes", "3", "--train-per-class", "4", "--val-per-class", "2",
                 "--size", "500x375", "--mask-dtype", "bool", "--mask-shape", "1hw", "--val-masks", "--quiet"])
        check(r.returncode == 0, "fgmoe-synth wrote the source dataset: " + r.stderr.strip())
        train0 = os.path.join(src, "train", "class_000")
        small = os.path.join(train0, "small.JPEG")
        Image.new("RGB", (100, 80), (200, 30, 40)).save(small, quality=90)
        png = os.path.join(src, "train", "class_001", "picture.png")
        Image.new("RGB", (400, 300), (20, 200, 40)).save(png)
        broken = os.path.join(src, "train", "class_002", "broken.JPEG")
        with open(broken, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not really a JPEG")
        os.makedirs(os.path.join(src, "train", "class_003"))

        # At quality 100 PIL's encoder and fgmoe's decode to the same pixels for the same input,
        # so the resize itself is compared exactly.
        prepare = [args.tool, "--data-path", src, "--out", dst, "--shorter-side", "128", "--quality", "100"]
        r = run(prepare + ["--workers", "2"])
        check(r.returncode == 0, "fgmoe-prepare ran (exit %d): %s" % (r.returncode, r.stderr.strip()[-400:]))
        summary = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        check("21 images (15 train, 6 val)" in summary and "18 resized to a shorter side of 128" in summary
              and "1 already that small" in summary and "1 not JPEG" in summary and "1 unreadable" in summary,
              "the summary counts every kind of image: " + summary)
        check("masks: 18 resized" in summary, "the summary counts the masks")
        check(os.path.isdir(os.path.join(dst, "train", "class_003")), "an empty class folder is kept (labels stay)")

        worst = 0.0
        resized = 0
        for split in ("train", "val"):
            for cls in sorted(os.listdir(os.path.join(src, split))):
                for name in sorted(os.listdir(os.path.join(src, split, cls))):
                    s, d = os.path.join(src, split, cls, name), os.path.join(dst, split, cls, name)
                    if not os.path.exists(d):
                        check(False, "%s/%s/%s was copied" % (split, cls, name))
                        continue
                    if not name.startswith("class_"):
                        check(filecmp.cmp(s, d, shallow=False), "%s is copied byte for byte" % name)
                        continue
                    original = Image.open(s).convert("RGB")
                    size = resized_size(original.width, original.height, 128)
                    got = Image.open(d)
                    if got.size != size:
                        check(False, "%s has size %s, expected %s" % (d, got.size, size))
                        continue
                    # PIL's resize, encoded as fgmoe-prepare encodes (4:2:0) and decoded.
                    buffer = io.BytesIO()
                    original.resize(size, Image.BICUBIC).save(buffer, "JPEG", quality=100, subsampling=2)
                    expected = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64)
                    worst = max(worst, np.abs(np.asarray(got.convert("RGB"), dtype=np.float64) - expected).max())
                    resized += 1
                    stem = os.path.splitext(name)[0] + ".pth"
                    mask_src = os.path.join(src, split + "_mask", cls, stem)
                    mask_dst = os.path.join(dst, split + "_mask", cls, stem)
                    m = torch.load(mask_dst, weights_only=True)
                    source = torch.load(mask_src, weights_only=True).squeeze(0).numpy().astype(np.uint8)
                    nearest = np.asarray(Image.fromarray(source).resize(size, Image.NEAREST))
                    if m.dtype != torch.uint8 or tuple(m.shape) != (size[1], size[0]):
                        check(False, "%s is uint8 %s, got %s %s" % (mask_dst, (size[1], size[0]), m.dtype,
                                                                     tuple(m.shape)))
                    elif not np.array_equal(m.numpy(), nearest):
                        check(False, "%s differs from PIL's nearest resize of the source mask" % mask_dst)
        check(resized == 18, "18 images resized to the torchvision Resize(128) size (%d)" % resized)
        check(worst <= 1, "resized images match PIL's bicubic resize encoded alike (largest difference %g "
                      "levels)" % worst)

        # A second run keeps what is there and completes what is missing, identically.
        victim = os.path.join(dst, "train", "class_001", "class_001_2.JPEG")
        with open(victim, "rb") as f:
            before = f.read()
        os.remove(victim)
        os.remove(os.path.join(dst, "train_mask", "class_001", "class_001_2.pth"))
        r = run(prepare + ["--quiet"])
        check(r.returncode == 0 and "20 already there from an earlier run" in r.stderr,
              "a second run keeps the finished files: " + r.stderr.strip()[-300:])
        with open(victim, "rb") as f:
            check(f.read() == before, "a missing image is written again, identically")
        check(os.path.exists(os.path.join(dst, "train_mask", "class_001", "class_001_2.pth")),
              "its missing mask is written again")
        check(not any(n.endswith(".tmp") for _, _, files in os.walk(dst) for n in files),
              "no temporary files are left behind")

        r = run([args.tool, "--data-path", src, "--out", os.path.join(src, "inside")])
        check(r.returncode != 0 and "must not be the dataset folder or inside it" in r.stderr,
              "an output inside the source is refused: " + r.stderr.strip())
        r = run([args.tool, "--data-path", os.path.join(tmp, "nowhere"), "--out", dst])
        check(r.returncode != 0 and "dataset folder not found" in r.stderr and "nowhere" in r.stderr,
              "a missing source is named: " + r.stderr.strip())
        r = run([args.tool, "--data-path", src, "--out", dst, "--shorter-side", "big"])
        check(r.returncode != 0 and "--shorter-side" in r.stderr, "a bad option value names the option: "
              + r.stderr.strip())

    finish("fgmoe-prepare OK")


if __name__ == "__main__":
    main()
