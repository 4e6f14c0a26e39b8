#!/usr/bin/env bash
# Fuzzes what fgmoe reads from its users: builds the libFuzzer targets with
# clang, AddressSanitizer and UBSan into build-fuzz/, seeds a corpus with valid
# inputs and runs each target for SECONDS (default 60).
#   fuzz_pth, fuzz_safetensors  the checkpoint and weight readers (seeds written
#                               by Debian's python3-torch when it is there)
#   fuzz_image                  image and mask decoding and the training and
#                               validation transforms (seeds written by
#                               python3-pil: JPEG and PNG in their variants)
#   fuzz_config                 trainer config files and --opts lines, and the
#                               data options and RandAugment spec they give
# A crash leaves its input in build-fuzz/ as crash-* (a hang: timeout-*, memory:
# oom-*); reproduce with build-fuzz/tests/fuzz/fuzz_<target> <file>.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
shift || true
all_targets=(pth safetensors image config)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "tools/fuzz.sh: unknown target '$t' (${all_targets[*]})" >&2; exit 2; }
done
source tools/deps.sh
fgmoe_ensure_packages clang libomp-dev
command -v clang++ >/dev/null || { echo "tools/fuzz.sh: clang++ is needed (apt-get install clang libomp-dev)" >&2; exit 1; }

cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DFGMOE_FUZZ=ON -DFGMOE_TESTS=OFF -DFGMOE_CUDA=OFF -DFGMOE_NATIVE=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}"

corpus=build-fuzz/corpus
mkdir -p "$corpus/pth" "$corpus/safetensors" "$corpus/image" "$corpus/config"
python=/usr/bin/python3
if "$python" -c "import torch" 2>/dev/null; then
  "$python" - "$corpus" <<'PY'
import json, os, struct, sys
import torch
out = sys.argv[1]
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
seeds = {
    "tensor": base,
    "view": base.t()[1:],
    "state_dict": {"w": base, "b": torch.zeros(4, dtype=torch.float64), "n": torch.tensor(3)},
    "shared": {"a": base, "b": base[1], "c": base.t()},
    "dtypes": {str(d): torch.ones(2, dtype=d) for d in
               [torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool]},
    "checkpoint": {"model": {"w": base}, "epoch": 3, "lr": 0.5, "name": "x", "list": [1, (2, None)]},
    "mask": (torch.arange(35).reshape(1, 5, 7) % 3 == 0),
}
for name, value in seeds.items():
    torch.save(value, os.path.join(out, "pth", name + ".pth"))
data = struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<2q", 5, 6)
header = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
          "b": {"dtype": "I64", "shape": [2], "data_offsets": [16, 32]},
          "__metadata__": {"format": "pt"}}
h = json.dumps(header).encode()
with open(os.path.join(out, "safetensors", "small.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
PY
else
  echo "tools/fuzz.sh: no python3-torch; the pth and safetensors corpora start empty" >&2
fi
if "$python" -c "import PIL" 2>/dev/null; then
  "$python" - "$corpus/image" <<'PY'
import os, sys
from PIL import Image
out = sys.argv[1]
def picture(w, h, mode="RGB"):
    im = Image.new("RGB", (w, h))
    im.putdata([((x * 37) % 256, (y * 53) % 256, ((x + y) * 11) % 256) for y in range(h) for x in range(w)])
    return im.convert(mode)
rgb = picture(45, 31)
rgb.save(os.path.join(out, "baseline.jpg"), quality=90)
rgb.save(os.path.join(out, "444.jpg"), quality=95, subsampling=0)
rgb.save(os.path.join(out, "422.jpg"), quality=75, subsampling=1)
rgb.save(os.path.join(out, "progressive.jpg"), quality=80, progressive=True)
picture(64, 48).save(os.path.join(out, "restart.jpg"), quality=85, restart_marker_blocks=1)
picture(9, 5).save(os.path.join(out, "tiny.jpg"), quality=50)
picture(40, 24, "L").save(os.path.join(out, "gray.jpg"), quality=90)
picture(20, 12, "CMYK").save(os.path.join(out, "cmyk.jpg"), quality=90)
rgb.save(os.path.join(out, "rgb.png"))
picture(23, 17, "RGBA").save(os.path.join(out, "rgba.png"))
picture(23, 17, "L").save(os.path.join(out, "gray.png"))
picture(23, 17, "1").save(os.path.join(out, "mask.png"))
picture(23, 17, "P").save(os.path.join(out, "palette.png"))
picture(15, 11, "L").convert("I").point(lambda v: v * 257).save(os.path.join(out, "gray16.png"))
PY
else
  echo "tools/fuzz.sh: no python3-pil; the image corpus starts empty" >&2
fi
cp train/configs/*.json "$corpus/config/"
printf 'TRAIN.BASE_LR 0.001\nAUG.AUTO_AUGMENT rand-m7-n3-mstd1.0-mmax12-inc1\nAUG.CUTMIX_MINMAX [0.2, 0.8]\nDATA.IMG_SIZE 64\n' \
  > "$corpus/config/opts.txt"

status=0
for target in "${targets[@]}"; do
  echo "== fuzzing fuzz_$target for ${seconds}s"
  (cd build-fuzz && tests/fuzz/fuzz_$target -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -rss_limit_mb=4096 -print_final_stats=1 -print_funcs=0 "corpus/$target") || status=$?
done
exit $status
