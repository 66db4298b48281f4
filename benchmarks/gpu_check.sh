#!/usr/bin/env bash
# One check on a bare CUDA machine, in about 5 minutes: install the package,
# print what the machine is, run the device-independent tests on the GPU
# (CAUSALFUSE_TEST_DEVICE=cuda: the tests that take the `device` fixture),
# time the fusion of causalfuse and causalfuse-nobaffm at 480 x 640 and
# 1920 x 1080 in fp32 and bf16, and check that GPU and CPU images agree within
# one grey level (fp32) and bf16 within its stated tolerance of fp32. Every
# stage runs whatever happened to the ones before; stages.txt says which
# failed. Results in $OUT: run.log, stages.txt, tests.xml (JUnit), tests.json,
# info.json, timing.json, agreement.json, and gpu_check.json + gpu_check.md
# gathering them.
#
# Prepare on this machine first (an ignored folder, carried to the device; the
# same pack as gpu_run.sh's, which may also hold train/):
#   mkdir -p .gpu_pack && cp -r ../shared/data/val .gpu_pack/val
#   cp ../shared/weights/lrrnet/lrrnet_official.model .gpu_pack/
#   cp -r ../shared/specs/lrrnet_reference .gpu_pack/
# Without .gpu_pack the tests needing reference data skip (saying so) and the
# agreement runs on synthetic pairs.
# Then run it (device tool: carry .gpu_pack):
#   OUT=$OUT bash benchmarks/gpu_check.sh
# Tested on a CPU with a tiny size:
#   OUT=/tmp/gpu_check DEVICE=cpu SIZES="48x64 64x80" REPEATS=2 MAX_PAIRS=1 SYNTHETIC=48x64 KERNELS=eager \
#       TESTS=tests/test_losses.py TEST_LIMIT=900 TIME_LIMIT=900 AGREE_LIMIT=900 bash benchmarks/gpu_check.sh
#
# Settings (environment): DEVICE (cuda), PACK (.gpu_pack), SIZES ("480x640
# 1080x1920", H x W), REPEATS (5), MAX_PAIRS (3 of each val set), SYNTHETIC
# (480x640: the synthetic pairs' size without a val set), KERNELS ("eager
# compiled"), METHODS ("causalfuse causalfuse-nobaffm"), TESTS (the test
# files), and time limits in seconds for the stages, about 5 minutes in all:
# TEST_LIMIT (120), TIME_LIMIT (90), AGREE_LIMIT (90).
set -uo pipefail
: "${OUT:?set OUT to the output folder}"
DEVICE=${DEVICE:-cuda}
PACK=${PACK:-.gpu_pack}
SIZES=${SIZES:-480x640 1080x1920}
REPEATS=${REPEATS:-5}
MAX_PAIRS=${MAX_PAIRS:-3}
SYNTHETIC=${SYNTHETIC:-480x640}
KERNELS=${KERNELS:-eager compiled}
METHODS=${METHODS:-causalfuse causalfuse-nobaffm}
TESTS=${TESTS:-tests/test_losses.py tests/test_lrr.py tests/test_net.py tests/test_fuse.py tests/test_train.py}
TEST_LIMIT=${TEST_LIMIT:-120}
TIME_LIMIT=${TIME_LIMIT:-90}
AGREE_LIMIT=${AGREE_LIMIT:-90}
WORK=${WORK:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
: > "$OUT/stages.txt"
exec > >(tee -a "$OUT/run.log") 2>&1

# stage NAME LIMIT COMMAND...: run it under a time limit and record how it ended.
stage() {
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (at most $limit s)"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    local how="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then how="stopped at its limit of $limit s"
    elif [ "$rc" -ne 0 ]; then how="failed (exit $rc)"; fi
    echo "$name: $how, $(( $(date +%s) - start )) s" | tee -a "$OUT/stages.txt"
}

if ! python3 -c "import causalfuse" 2>/dev/null; then
    # No network there: no build isolation (setuptools is installed) and no dependencies.
    python3 -m pip install -q --no-deps --no-build-isolation -e . || echo "install: failed" >> "$OUT/stages.txt"
fi
# shellcheck disable=SC2206
sizes=($SIZES)
# shellcheck disable=SC2206
kernels=($KERNELS)
# shellcheck disable=SC2206
methods=($METHODS)
# shellcheck disable=SC2206
tests=($TESTS)
val=()
[ -d "$PACK/val" ] && val=(--val "$PACK/val")

stage info 120 python3 benchmarks/gpu_check.py info --device "$DEVICE" --out "$OUT"

# The tests read reference data from a folder laid out as ../shared is: make one from the pack.
shared="$WORK/shared"
mkdir -p "$shared/weights/lrrnet" "$shared/data" "$shared/specs"
[ -f "$PACK/lrrnet_official.model" ] && ln -sf "$(realpath "$PACK/lrrnet_official.model")" "$shared/weights/lrrnet/"
[ -d "$PACK/val" ] && ln -sfn "$(realpath "$PACK/val")" "$shared/data/val"
[ -d "$PACK/lrrnet_reference" ] && ln -sfn "$(realpath "$PACK/lrrnet_reference")" "$shared/specs/lrrnet_reference"
if python3 -c "import pytest" 2>/dev/null; then
    stage tests "$TEST_LIMIT" env CAUSALFUSE_TEST_DEVICE="$DEVICE" CAUSALFUSE_SHARED="$shared" \
        python3 -m pytest -q -p no:cacheprovider -rfEs --junitxml "$OUT/tests.xml" "${tests[@]}"
    python3 benchmarks/gpu_check.py junit --out "$OUT" || true
else
    echo "tests: pytest is not installed here" | tee -a "$OUT/stages.txt"
fi

stage timing "$TIME_LIMIT" python3 benchmarks/gpu_check.py time --device "$DEVICE" --out "$OUT" \
    --sizes "${sizes[@]}" --repeats "$REPEATS" --kernels "${kernels[@]}" --methods "${methods[@]}"
stage agreement "$AGREE_LIMIT" python3 benchmarks/gpu_check.py agree --device "$DEVICE" --out "$OUT" \
    --max-pairs "$MAX_PAIRS" --synthetic-size "$SYNTHETIC" --methods "${methods[@]}" "${val[@]}"
python3 benchmarks/gpu_check.py report --out "$OUT"
echo "== done"
