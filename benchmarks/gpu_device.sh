#!/usr/bin/env bash
# One prepared GPU check for the lent device machine (see benchmarks/gpu.py).
# Expects the onnxruntime-gpu wheel split into .gpuwhl/p0..p3 (carried separately,
# each part under the device tool's per-call size limit) and writes results to $OUT.
set -euo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
WHL=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat .gpuwhl/p0 .gpuwhl/p1 .gpuwhl/p2 .gpuwhl/p3 > "$WHL"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHL"
export PYTHONPATH=/tmp/site:$PWD
NV=$(python3 -c "import nvidia, glob; print(':'.join(sorted({p for d in nvidia.__path__ for p in glob.glob(d + '/**/lib', recursive=True)})))")
export LD_LIBRARY_PATH="$NV:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -m berg_onnx doctor 2>&1 | tee "$OUT/doctor.txt"
python3 -m export synth --out /tmp/b --rois FFA-1 V1 lateral --quiet
python3 -m export convert --berg-dir /tmp/b --out /tmp/e --quiet
python3 -m benchmarks.gpu /tmp/e /tmp/b 2>&1 | tee "$OUT/gpu.log"
