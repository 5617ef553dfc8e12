#!/usr/bin/env bash
# The checks a GPU session runs, in order of importance, each with its own time limit; every
# result lands in OUT (default runs/gpu_check). Assumes the packages are importable and the
# procedural_digits/fixed28 TFDS data prepared.
#
#   bash benchmarks/gpu_check.sh [OUT]
set -uo pipefail
OUT=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=cuda
log() { echo "== $* ($(date +%T))" | tee -a "$OUT/steps.txt"; }

nvidia-smi -L >"$OUT/steps.txt"
python -c "import jax, flax, optax, orbax.checkpoint as o; print(jax.__version__, flax.__version__, optax.__version__, jax.devices())" | tee -a "$OUT/steps.txt"

log "1. exactness tests on the GPU (float32 at highest matmul precision)"
timeout 150 python -m pytest -q -x -p no:cacheprovider tests/test_models.py tests/test_layers.py \
  tests/test_device_loader.py 2>&1 | tail -25 >"$OUT/tests_exact.txt"

log "2. end to end against the step alone, float32, batch 256 and 1024"
for b in 1024 256; do
  timeout 170 python -m benchmarks.end_to_end --batch_size=$b --steps=400 \
    --pipelines=device,grain --out="$OUT/e2e_$b.json" 2>&1 | tail -8 >"$OUT/e2e_$b.txt"
done

log "3. JAX (autodiff and custom gradient) against PyTorch eager on the GPU"
for g in autodiff custom; do
  timeout 80 python -m benchmarks.torch_compare --device=cuda --sizes=28,64 \
    --batch_sizes=256,1024 --steps=20 --repeats=3 --conv_grad=$g 2>&1 | tail -6 >"$OUT/torch_$g.txt"
done

log "4. precision: TF32 (default) and bfloat16 against float32 highest, fixed 28, batch 1024"
for p in "float32 default" "bfloat16 auto"; do
  set -- $p
  timeout 60 python -m benchmarks.end_to_end --batch_size=1024 --steps=400 --policies=fixed \
    --pipelines=device --precision=$1 --matmul_precision=$2 2>&1 | tail -2 >>"$OUT/precision.txt"
done

log "5. the whole test suite on the GPU"
timeout 240 python -m pytest -q -p no:cacheprovider -n 4 2>&1 | tail -30 >"$OUT/tests_all.txt"
log "done"
