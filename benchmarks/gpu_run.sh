#!/usr/bin/env bash
# One run on a bare CUDA machine: install the package, train causalfuse and
# causalfuse-nobaffm (for one or several seeds) side by side on one GPU for a
# fixed wall budget, score them on the val sets, check that a GPU-trained checkpoint fuses the same on
# CPU and GPU, and leave everything in $OUT (at most 8 files).
#
# Prepare on this machine first (an ignored folder, carried to the device):
#   python benchmarks/pack_luminance.py ../shared/data/train/MSRS ../shared/data/train/LLVIP \
#       -o .gpu_pack/train --max-pairs 150
#   cp -r ../shared/data/val .gpu_pack/val
#   cp ../shared/weights/lrrnet/lrrnet_official.model .gpu_pack/
# Then run it (device tool: carry .gpu_pack):
#   MINUTES=4 bash benchmarks/gpu_run.sh
# Tested on a CPU with a tiny budget:
#   OUT=/tmp/gpu_out DEVICE=cpu MINUTES=0.2 CROP=64 MAX_IMAGES=1 bash benchmarks/gpu_run.sh
#
# Settings (environment): MINUTES (wall budget of each training run, default 4),
# DEVICE (cuda), CROP (256), BATCH (6), PACK (.gpu_pack), MAX_IMAGES (0: every
# val pair), RECIPE (extra train options, e.g. "--set loss.intensity_target=mean"),
# SEEDS ("0"; e.g. "0 1 2": every seed of both variants trains at once; the
# first seed's checkpoints come back, every run is scored).
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
MINUTES=${MINUTES:-4}
DEVICE=${DEVICE:-cuda}
CROP=${CROP:-256}
BATCH=${BATCH:-6}
PACK=${PACK:-.gpu_pack}
MAX_IMAGES=${MAX_IMAGES:-0}
RECIPE=${RECIPE:-}
SEEDS=${SEEDS:-0}
WORK=${WORK:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
LOG="$OUT/run.log"
exec > >(tee -a "$LOG") 2>&1

for need in "$PACK/train/MSRS" "$PACK/train/LLVIP" "$PACK/val" "$PACK/lrrnet_official.model"; do
    [ -e "$need" ] || { echo "gpu_run: $need is missing: prepare $PACK as the header of this script says"; exit 2; }
done

if ! python3 -c "import causalfuse" 2>/dev/null; then
    # No network there: no build isolation (setuptools is installed) and no dependencies.
    python3 -m pip install -q --no-deps --no-build-isolation -e . || { echo "gpu_run: could not install the package"; exit 2; }
fi
python3 -c "import torch, causalfuse; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

common=(--data "$PACK/train/MSRS" "$PACK/train/LLVIP" --lrrnet-weights "$PACK/lrrnet_official.model"
        --crop "$CROP" --batch "$BATCH" --lr 1e-4 --head-lr 1e-3 --head-only-steps 100 --steps 1000000
        --max-minutes "$MINUTES" --device "$DEVICE" --checkpoint-every 500 --log-every 10 --no-progress)
# shellcheck disable=SC2206
extra=($RECIPE)
echo "== training both variants, seeds $SEEDS, for $MINUTES min, all side by side, crop $CROP batch $BATCH on $DEVICE ${RECIPE:+($RECIPE)}"
pids=()
runs=()
for seed in $SEEDS; do
    causalfuse train "${common[@]}" "${extra[@]}" --seed "$seed" --dictionary src/causalfuse/weights/dictionary.safetensors \
        -o "$WORK/baffm-s$seed" > "$WORK/baffm-s$seed.out" 2>&1 &
    pids+=($!)
    causalfuse train "${common[@]}" "${extra[@]}" --seed "$seed" --no-baffm -o "$WORK/nobaffm-s$seed" > "$WORK/nobaffm-s$seed.out" 2>&1 &
    pids+=($!)
    runs+=("baffm-s$seed" "nobaffm-s$seed")
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
first=${SEEDS%% *}
models=()
for run in "${runs[@]}"; do
    tail -n 2 "$WORK/$run.out"
    seed=${run##*-s}
    name=causalfuse; [[ $run == nobaffm* ]] && name=causalfuse-nobaffm
    [ -f "$WORK/$run/model.safetensors" ] && models+=(--model "$name@$seed=$WORK/$run/model.safetensors")
done
cp "$WORK/baffm-s$first/model.safetensors" "$OUT/causalfuse.safetensors" || true
cp "$WORK/nobaffm-s$first/model.safetensors" "$OUT/causalfuse-nobaffm.safetensors" || true
(cd "$WORK" && tar -czf "$OUT/runs.tar.gz" ./*.out ./*/log.csv ./*/config.json) || true
[ "$status" -eq 0 ] || { echo "gpu_run: a training run failed (exit $status)"; exit "$status"; }

python3 - "$OUT" <<'EOF'
import json, sys
from causalfuse.checkpoint import read_metadata
for name in ("causalfuse", "causalfuse-nobaffm"):
    b = read_metadata(f"{sys.argv[1]}/{name}.safetensors")["info"]["budget"]
    print(f"{name}: {b['steps']} steps in {b['wall_seconds']} s = {b['steps'] / b['wall_seconds']:.2f} steps/s "
          f"({b['images_seen']} crops of {b['crop']}, device {b['device']})")
EOF

echo "== scoring on the val sets"
python3 benchmarks/recipe_study.py -o "$WORK/study" --val "$PACK/val" --max-images "$MAX_IMAGES" --device "$DEVICE" --no-progress \
    "${models[@]}" --compare causalfuse causalfuse-nobaffm
cp "$WORK/study/scores.csv" "$WORK/study/summary.md" "$OUT/"

echo "== the GPU-trained checkpoint fused on $DEVICE and on the CPU"
python3 - "$OUT/causalfuse.safetensors" "$PACK/val" "$DEVICE" <<'EOF' | tee "$OUT/cross_device.txt"
import sys
from pathlib import Path
import numpy as np
import causalfuse
weights, val, device = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
worst = 0.0
for ir in sorted((val / "TNO21" / "ir").iterdir())[:3]:
    vi = val / "TNO21" / "vi" / ir.name
    a = causalfuse.fuse(ir, vi, weights=weights, device=device)
    b = causalfuse.fuse(ir, vi, weights=weights, device="cpu")
    d = float(np.abs(np.rint(a * 255) - np.rint(b * 255)).max())
    worst = max(worst, d)
    print(f"{ir.name}: largest difference {d:.0f} grey levels ({device} vs cpu)")
print(f"largest over the pairs: {worst:.0f} grey levels")
EOF
echo "== done"
