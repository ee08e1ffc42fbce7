#!/usr/bin/env bash
# Every GPU measurement of benchmarks/ in one go (< 5 minutes on an H100 / H200), for the device machine
# whose Python has torch, timm, pandas, scikit-learn, matplotlib but lacks segmentation-models-pytorch
# (and pydicom): those travel as wheels in .whl/ (fetch them here with benchmarks/fetch_gpu_wheels.sh).
#   bash benchmarks/gpu_suite.sh [OUTDIR]      # logs go to OUTDIR (default $OUT or ./outputs/gpu_suite)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-outputs/gpu_suite}}"
mkdir -p "$out"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
run() { local name=$1; shift; echo "== $name: $*" | tee -a "$out/suite.log";
        timeout 150 python3 "$@" 2>&1 | grep -v Warning | tee "$out/$name.txt" | tee -a "$out/suite.log"; }
run step_fp32   -m benchmarks.step --batch 32 --size 224 --repeats 5 --json "$out/step_times.json"
run step_bf16   -m benchmarks.step --batch 32 --size 224 --repeats 5 --amp bf16 --arms unet,set1-gbp,set3-gbp
run double_backward -m benchmarks.double_backward
run concurrency -m benchmarks.concurrency --arm set3-gbp --counts 1,2,4,8 --seconds 8
# The study's schedule on simulated GPUs with these step times runs anywhere (CPU, Ray):
#   python -m benchmarks.cluster_sim --step-times OUTDIR/step_times.json
