#!/usr/bin/env bash
# KiTS21/23 recipe with a held-out split, for kits-unet3d (seed 002) or c2f-cascade (seed 004):
# plan (kits-unet3d), train on 80 % of the cases, segment the held-out 20 %, score them.
#
#   recipes/kits.sh METHOD DATASET OUT [extra "kidneyseg train METHOD" flags ...]
#
# METHOD: kits-unet3d or c2f-cascade. DATASET: the KiTS layout (case_XXXXX/imaging.nii.gz and
# segmentation.nii.gz), e.g. kits23/dataset. OUT: a new folder. Environment: KIDNEYSEG (the
# command, default: kidneyseg), MEMORY_GB (the planning budget, default 8), HOLDOUT (the share
# of cases held out, in percent, default 20; the last cases by id, at least one). Example on a
# GPU with the paper's settings (kits-unet3d only):
#   MEMORY_GB=24 recipes/kits.sh kits-unet3d kits23/dataset runs/kits --preset paper --device cuda
# tests/cli/test_recipes.py runs this script on synthetic cases in the same layout.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: recipes/kits.sh kits-unet3d|c2f-cascade DATASET OUT [train flags ...]" >&2
    exit 2
fi
method=$1; data=$2; out=$3; shift 3
ks=${KIDNEYSEG:-kidneyseg}
case "$method" in kits-unet3d|c2f-cascade) ;; *) echo "recipes/kits.sh: unknown method $method" >&2; exit 2;; esac
mapfile -t cases < <(find "$data" -mindepth 1 -maxdepth 1 -type d -name 'case_*' -printf '%f\n' | sort)
n=${#cases[@]}
if [ "$n" -lt 2 ]; then echo "recipes/kits.sh: $data: need at least 2 case_* folders, found $n" >&2; exit 2; fi
k=$(( n * ${HOLDOUT:-20} / 100 )); [ "$k" -ge 1 ] || k=1
held=("${cases[@]:n-k}")
mkdir -p "$out"
printf '%s\n' "${held[@]}" > "$out/held_out.txt"
train=("$ks" train "$method" --dataset "$data" -o "$out/model" --exclude "${held[@]}")
if [ "$method" = kits-unet3d ]; then
    plan_preset=()
    for a in "$@"; do [ "$a" = paper ] && plan_preset=(--preset paper); done
    "$ks" plan "$data" -o "$out/plan.json" --memory-gb "${MEMORY_GB:-8}" --overwrite "${plan_preset[@]}"
    train+=(--plan "$out/plan.json")
fi
"${train[@]}" "$@"
{ echo "case,path"; for c in "${held[@]}"; do echo "$c,$(cd "$data" && pwd)/$c/imaging.nii.gz"; done; } > "$out/held_out.csv"
"$ks" segment --pipeline "$method" --model "$out/model" --manifest "$out/held_out.csv" -o "$out/pred" --no-overlay
"$ks" evaluate "$out/pred" "$data" --regions kits -o "$out/scores" 2> >(grep -v "with a reference only" >&2)
echo "held-out scores: $out/scores (cases: $(tr '\n' ' ' < "$out/held_out.txt"))"
