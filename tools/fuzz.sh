#!/usr/bin/env bash
# Fuzzes the file readers: builds the libFuzzer targets for the .pth and the
# safetensors reader with clang, AddressSanitizer and UBSan into build-fuzz/,
# seeds a corpus with valid files (written by Debian's python3-torch when it is
# there) and runs each target for SECONDS (default 60). A crash leaves its input
# in build-fuzz/ as crash-*; reproduce with build-fuzz/tests/fuzz/fuzz_pth <file>.
#
#   tools/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
source tools/deps.sh
fgmoe_ensure_packages clang libomp-dev
command -v clang++ >/dev/null || { echo "tools/fuzz.sh: clang++ is needed (apt-get install clang libomp-dev)" >&2; exit 1; }

cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DFGMOE_FUZZ=ON -DFGMOE_TESTS=OFF -DFGMOE_CUDA=OFF -DFGMOE_NATIVE=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_pth fuzz_safetensors

corpus=build-fuzz/corpus
mkdir -p "$corpus/pth" "$corpus/safetensors"
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
  echo "tools/fuzz.sh: no python3-torch; starting from an empty corpus" >&2
fi

for target in pth safetensors; do
  echo "== fuzzing the $target reader for ${seconds}s"
  (cd build-fuzz && tests/fuzz/fuzz_$target -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -rss_limit_mb=4096 -print_final_stats=1 -print_funcs=0 "corpus/$target")
done
