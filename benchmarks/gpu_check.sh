#!/usr/bin/env bash
# The checks a GPU session runs, most important first, each under its own time limit; results
# land in OUT (default runs/gpu_check). Assumes fcn_jax's packages importable and the
# procedural_digits/fixed28 TFDS data prepared.
#
#   bash benchmarks/gpu_check.sh [OUT]
set -uo pipefail
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=cuda
log() { echo "== $* ($(date +%T))" | tee -a "$OUT/steps.txt"; }
e2e() { timeout "$1" "$PY" -m benchmarks.end_to_end "${@:2}" 2>&1 | grep -v "^[IW][0-9]"; }

nvidia-smi -L >"$OUT/steps.txt"
"$PY" -c "import jax, flax, optax, orbax.checkpoint, grain; print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, jax.devices())" >>"$OUT/steps.txt" 2>&1 || exit 1

log "1. exactness tests on the GPU (float32, highest matmul precision)"
timeout 100 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_models.py tests/test_layers.py \
  tests/test_device_loader.py 2>&1 | tail -25 >"$OUT/tests_exact.txt"

log "2. end to end against the step alone: batch 1024, device pipeline"
e2e 100 --batch_size=1024 --steps=400 --pipelines=device --out="$OUT/e2e_1024.json" \
  | tail -5 >"$OUT/e2e_1024.txt"

log "3. JAX (autodiff input gradient) against PyTorch eager, same GPU"
timeout 50 "$PY" -m benchmarks.torch_compare --device=cuda --sizes=28,64 --batch_sizes=256,1024 \
  --steps=20 --repeats=3 --conv_grad=autodiff 2>&1 | tail -6 >"$OUT/torch_autodiff.txt"

log "4. end to end: batch 256, device and grain pipelines"
e2e 80 --batch_size=256 --steps=300 --policies=fixed,mixed_example --pipelines=device,grain \
  --out="$OUT/e2e_256.json" | tail -5 >"$OUT/e2e_256.txt"

log "5. the custom input gradient on the GPU"
timeout 50 "$PY" -m benchmarks.torch_compare --device=cuda --sizes=28,64 --batch_sizes=256,1024 \
  --steps=20 --repeats=3 --conv_grad=custom 2>&1 | tail -6 >"$OUT/torch_custom.txt"

log "6. precision: TF32 (default) and bfloat16 against float32 at highest (row 2)"
for p in "float32 default" "bfloat16 auto"; do
  set -- $p
  e2e 35 --batch_size=1024 --steps=400 --policies=fixed --pipelines=device --precision="$1" \
    --matmul_precision="$2" | tail -1 | sed "s/^/$1 $2: /" >>"$OUT/precision.txt"
done

log "7. the whole test suite on the GPU (as far as it gets)"
timeout "${SUITE_SECONDS:-60}" "$PY" -m pytest -q -p no:cacheprovider -n 8 2>&1 \
  | tail -30 >"$OUT/tests_all.txt"
log "done"
