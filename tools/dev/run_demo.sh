#!/usr/bin/env bash
# The main job: set up .venv/ if needed, generate the shapes dataset if
# missing, train the demo model on CPU or GPU, evaluate it and print the
# metrics table. Re-running skips what is done: the dataset is kept, and a
# finished training run (its final checkpoint) is evaluated again instead of
# retrained.
#   bash tools/dev/run_demo.sh [det|seg|cls] [extra tools/train.py arguments,
#     e.g. --amp]
# det (the default): Mask R-CNN with involution in the backbone (RedNet), FPN,
#   RPN and mask heads on the COCO-format dataset; COCO box and mask AP.
# seg: Semantic FPN with involution in the backbone and FPN on the label-map
#   dataset; mIoU (mmseg IoUMetric).
# cls: a small RedNet-26 classifier (mmpretrain ImageClassifier) on the
#   one-shape-an-image dataset, a folder per class; top-1 accuracy (mmpretrain
#   Accuracy, accuracy/top1 in %, chance 16.7).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TASK=det
if [[ $# -gt 0 && ( "$1" == det || "$1" == seg || "$1" == cls ) ]]; then
  TASK="$1"
  shift
fi
bash "$ROOT/tools/dev/setup_env.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
if [[ "$TASK" == det ]]; then
  CONFIG=configs/demo/mask-rcnn_rednet26-w16_inv-fpn-head_1k_coco-shapes.py
  FORMAT=coco
  DATA=data/coco_shapes
  DATA_DONE="$DATA/annotations/instances_val.json"  # written last
  WORK=work_dirs/demo_mask-rcnn_coco-shapes
  FINAL="$WORK/iter_1000.pth"
  SHOWN="$WORK/test/<timestamp>/predictions/ (ground truth beside them)"
elif [[ "$TASK" == seg ]]; then
  CONFIG=configs/demo/inv-fpn_rednet26-w16_1xb16-1500_seg-shapes-128x128.py
  FORMAT=seg
  DATA=data/seg_shapes
  DATA_DONE="$DATA/ann_dir/val/000100.png"  # written last
  WORK=work_dirs/demo_inv-fpn_seg-shapes
  FINAL="$WORK/iter_1500.pth"
  SHOWN="$WORK/test/<timestamp>/vis_data/predictions/ (ground truth beside them)"
else
  CONFIG=configs/demo/rednet26-w16_1xb32-2k_cls-shapes-64px.py
  FORMAT=cls
  DATA=data/cls_shapes
  DATA_DONE="$DATA/meta/classes.txt"  # written last
  WORK=work_dirs/demo_rednet26_cls-shapes
  FINAL="$WORK/iter_2000.pth"
  SHOWN="$WORK/test/<timestamp>/predictions/ (ground truth and prediction written on each)"
fi

if [[ ! -e "$DATA_DONE" ]]; then
  "$PY" tools/data/generate_shapes.py "$FORMAT" "$DATA"
fi
if [[ ! -f "$FINAL" ]]; then
  # --resume continues an interrupted run from its last checkpoint
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK" --resume "$@"
fi
"$PY" tools/test.py "$CONFIG" "$FINAL" --work-dir "$WORK/test" \
  --show-dir predictions
echo "Images with predictions: $SHOWN"
