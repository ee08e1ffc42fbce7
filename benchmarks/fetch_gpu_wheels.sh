#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels benchmarks/gpu_suite.sh installs on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl segmentation-models-pytorch==0.6.0 pydicom==3.0.2
