#!/usr/bin/env bash
# The main job: installs what is missing, builds, generates a small synthetic
# dataset with foreground masks, trains the tiny Soft MoE preset with the
# foreground-guided loss and LayerScale, evaluates it, draws its dispatch maps,
# and says where the log, metrics, checkpoints and figures went. Extra arguments go to fgmoe-train
# (e.g. --opts TRAIN.EPOCHS 5).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/deps.sh
fgmoe_ensure_packages
fgmoe_build

data=${FGMOE_DEMO_DATA:-data_synth/tiny10}
output=${FGMOE_DEMO_OUTPUT:-runs}
tag="demo-$(date +%Y%m%d-%H%M%S)"
run="$output/synthetic_tiny/$tag"

echo "== generating the synthetic dataset in $data"
build/fgmoe-synth --out "$data" --classes 10 --train-per-class 200 --val-per-class 40 \
  --size 64 --seed 0 --val-masks --force --quiet

echo "== training (the log also goes to $run/log.txt)"
build/fgmoe-train --cfg train/configs/synthetic_tiny.json --data-path "$data" \
  --output "$output" --tag "$tag" "$@"

checkpoint=$(ls -t "$run"/ckpt_epoch_*.pth | head -n 1)
echo "== evaluating $checkpoint"
build/fgmoe-train --cfg train/configs/synthetic_tiny.json --data-path "$data" \
  --output "$output" --tag "$tag-eval" --eval --resume "$checkpoint" --opts TRAIN.AUTO_RESUME false \
  | grep -E "Acc@1|Accuracy" || true

echo "== drawing the dispatch maps of 16 validation images"
build/fgmoe-maps --cfg train/configs/synthetic_tiny.json --checkpoint "$checkpoint" \
  --folder "$data/val" --max-images 16 --out "$run/maps" | tail -n 4

echo
echo "== done"
echo "  log:         $run/log.txt"
echo "  metrics:     $run/metrics.jsonl"
echo "  config:      $run/config.json"
echo "  checkpoint:  $checkpoint"
echo "  maps:        $run/maps/contact_sheet.png"
echo "  (chance level is 10% on these 10 classes)"
