#!/usr/bin/env bash
# The main job: set up .venv/ if needed, generate the COCO-format shapes dataset
# if missing, train the demo Mask R-CNN (RedNet with involution in backbone, FPN,
# RPN and mask heads) on CPU or GPU, evaluate it and print the COCO box and mask
# metrics. Re-running skips what is done: the dataset is kept, and a finished
# training run (its final checkpoint) is evaluated again instead of retrained.
#   bash tools/run_demo.sh [extra tools/train.py arguments, e.g. --amp]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
CONFIG=configs/demo/mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py
DATA=data/coco_shapes
WORK=work_dirs/demo_mask-rcnn_coco-shapes

if [[ ! -f "$DATA/annotations/instances_val.json" ]]; then
  "$PY" tools/data/generate_coco_shapes.py "$DATA"
fi
FINAL="$WORK/iter_1000.pth"
if [[ ! -f "$FINAL" ]]; then
  # --resume continues an interrupted run from its last checkpoint
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK" --resume "$@"
fi
"$PY" tools/test.py "$CONFIG" "$FINAL" --work-dir "$WORK/test" \
  --show-dir predictions
echo "Images with predicted boxes and masks: $WORK/test/<timestamp>/predictions/"
