#!/usr/bin/env bash
# dqn.py and dqn_atari.py on a CUDA GPU, in one command (for a machine lent for a short while,
# which may have no network):
#   1. installs what is missing: from the wheels in .whl/ where that folder exists (made on a
#      machine with network by `bash ../shared/device/prepare-wheels.sh`: gymnasium, ale-py,
#      tyro and their few needs, installed into /tmp/site with --no-index), else with pip,
#   2. checks that torch sees a CUDA device, and stops with one line where it does not,
#   3. runs the test suite there (dqn_atari.py's default device is then cuda),
#   4. measures a gradient step with and without its host read of the loss
#      (benchmarks/host_reads.py --device cuda),
#   5. measures training steps/s at CleanRL's settings (batch 32, an update every 4 env steps)
#      with 1, 8 and 16 envs, and 8 with --bf16 (benchmarks/atari_speed.py --device cuda),
#   6. trains Breakout with 8 envs for as many env steps as TRAIN_MINUTES allow at the measured
#      speed (benchmarks/atari_curve.py: the table, the curve and the final evaluation); 0: none.
# Everything goes to OUT_DIR: gpu.txt (the machine), tests.txt, reads.txt, speed.txt,
# atari_breakout.md and .png.
#
#   bash benchmarks/atari_gpu.sh [OUT_DIR] [TRAIN_MINUTES]     # defaults: benchmarks/results/gpu 5
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
MINUTES=${2:-5}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" >/dev/null; then  # no network: the wheels carried along
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
elif ! "$PYTHON" -c "import torch, gymnasium, ale_py, tyro, matplotlib, pytest" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet -r requirements.txt matplotlib
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "error: torch $("$PYTHON" -c 'import torch; print(torch.__version__)') sees no CUDA device;" \
         "this script measures the GPU path (install a CUDA build of torch on a machine with a GPU)" >&2
    exit 1
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
  echo "$(nproc) CPU cores"; } | tee "$OUT/gpu.txt"

"$PYTHON" -m pytest -q tests 2>&1 | tee "$OUT/tests.txt" || true  # (the figures are still measured)
"$PYTHON" benchmarks/host_reads.py --device cuda | tee "$OUT/reads.txt"
"$PYTHON" benchmarks/atari_speed.py --device cuda | tee "$OUT/speed.txt"
[ "$MINUTES" = 0 ] && exit 0
SPS=$(awk '/8 envs/ {print $NF}' "$OUT/speed.txt")
BUDGET=$("$PYTHON" -c "print(max(100_000, int($SPS * $MINUTES * 60 * 0.9) // 1000 * 1000))")
"$PYTHON" benchmarks/atari_curve.py --env-id BreakoutNoFrameskip-v4 --num-envs 8 --device cuda \
    --total-timesteps "$BUDGET" --learning-starts 20000 --out "$OUT" | tee "$OUT/curve.txt"
