#!/usr/bin/env bash
# Open Kidney Ultrasound recipe for us-ensemble (seed 003) with a held-out test split: train on
# the seeded patient-level split's train images (its validation images are only scored), segment
# the split's test images, and score them against each sonographer's capsule masks.
#
#   recipes/open_kidney.sh LABELS IMAGES OUT [extra "kidneyseg train us-ensemble" flags ...]
#
# LABELS: the Open Kidney annotation folder (reviewed_masks_1/, reviewed_masks_2/, the CSVs), e.g.
# ../shared/data/kidneyus_labels. IMAGES: the images, released by the data set's owners after
# registration (not in this repository). OUT: a new folder. Environment: KIDNEYSEG (the command,
# default: kidneyseg), PYTHON (for reading split.json, default: python3). Example on a GPU with
# the paper's settings and torchvision's ImageNet encoders (docs/pipelines.md):
#   recipes/open_kidney.sh kidneyus_labels kidneyus_images runs/us --preset paper --device cuda \
#       --encoder-weights deeplabv3plus_resnet18=resnet18-f37072fd.pth ...
# tests/cli/test_recipes.py runs this script on stand-in images in the same layout.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: recipes/open_kidney.sh LABELS IMAGES OUT [train flags ...]" >&2
    exit 2
fi
labels=$1; images=$2; out=$3; shift 3
ks=${KIDNEYSEG:-kidneyseg}
"$ks" train us-ensemble --dataset "$labels" --images "$images" -o "$out/model" "$@"
# the test split the trainer wrote and never read; frames without an image here are left out
"${PYTHON:-python3}" - "$out/model/split.json" "$images" "$out/test_frames" <<'PY'
import json, sys
from pathlib import Path
split, images, dest = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), Path(sys.argv[3])
found = [n for n in split["test"] if (images / n).is_file()]
dest.mkdir(parents=True, exist_ok=True)
for n in found:  # links, not copies: the images stay where they are
    (dest / n).symlink_to((images / n).resolve())
print(f"test split: {len(found)} of {len(split['test'])} frames have an image in {images}", file=sys.stderr)
if not found:
    sys.exit("recipes/open_kidney.sh: no test frame has an image")
PY
"$ks" segment --pipeline us-ensemble --model "$out/model" "$out/test_frames" -o "$out/pred" --no-overlay
for k in 1 2; do
    "$ks" evaluate "$out/pred" "$labels/reviewed_masks_$k/capsule" --regions foreground -o "$out/scores_sonographer$k" \
        2> >(grep -v "with a reference only" >&2)
done
echo "held-out scores: $out/scores_sonographer1, $out/scores_sonographer2 (frames: $out/test_frames)"
