#!/usr/bin/env bash
# The checks a GPU session runs, most important first, each under its own time limit; results
# land in OUT (default runs/gpu_check). Assumes fcn_jax's packages importable and the
# procedural_digits and procedural_digits/fixed28 TFDS data prepared (fcn_jax.data.
# procedural_digits.prepare; about 10 s on 16 cores).
#
#   bash benchmarks/gpu_check.sh [OUT]
set -uo pipefail
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=cuda
log() { echo "== $* ($(date +%T))" | tee -a "$OUT/steps.txt"; }
e2e() { timeout "$1" "$PY" -m benchmarks.end_to_end "${@:2}" 2>&1 | grep --line-buffered -v "^[IW][0-9]"; }

nvidia-smi -L >"$OUT/steps.txt"
"$PY" -c "import jax, flax, optax, orbax.checkpoint, grain; print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, jax.devices())" >>"$OUT/steps.txt" 2>&1 || exit 1

log "1. the test suite on the GPU, failures named (as far as it gets in SUITE_SECONDS)"
timeout "${SUITE_SECONDS:-80}" "$PY" -m pytest -v -p no:cacheprovider -p no:benchmark -n 12 \
  2>&1 | grep -E "PASSED|FAILED|ERROR|passed|failed" >"$OUT/tests_all.txt"
echo "passed: $(grep -c PASSED "$OUT/tests_all.txt"), failed: $(grep -c FAILED "$OUT/tests_all.txt")" \
  | tee -a "$OUT/steps.txt"

log "2. end to end against the step alone and the loader alone: batch 1024, device pipeline"
e2e 80 --batch_size=1024 --steps=400 --policies=fixed,mixed_example --pipelines=device \
  --out="$OUT/e2e_1024.json" | tail -2 >"$OUT/e2e_1024.txt"

log "3. end to end: batch 256, device pipeline and Grain (host threads, prefetched to the GPU)"
e2e 110 --batch_size=256 --steps=300 --policies=fixed,mixed_example --pipelines=device,grain \
  --out="$OUT/e2e_256.json" | tail -4 >"$OUT/e2e_256.txt"

log "3b. variable-size data (procedural_digits), native: batch 1024 and 256, device; 256 Grain"
e2e 60 --batch_size=1024 --steps=400 --policies=native --pipelines=device \
  --dataset=procedural_digits --out="$OUT/e2e_native_1024.json" | tail -1 >"$OUT/e2e_native.txt"
e2e 70 --batch_size=256 --steps=400 --policies=native --pipelines=device,grain \
  --dataset=procedural_digits --out="$OUT/e2e_native_256.json" | tail -2 >>"$OUT/e2e_native.txt"

log "3c. fixed:28's loop split: the step that assembles its batch alone, and the host's time"
timeout 60 "$PY" -m benchmarks.host_overhead --batch_size=1024 --width=1 --steps=300 \
  --policies=fixed,mixed_example --pipelines=device --dataset=procedural_digits/fixed28 2>&1 \
  | grep --line-buffered "µs/step" | tail -2 >"$OUT/host_overhead_1024.txt"

log "4. the strided-conv input gradient: custom and autodiff (fixed 28, batch 1024, TF32)"
for g in custom autodiff; do
  e2e 35 --batch_size=1024 --steps=300 --policies=fixed --pipelines=device --conv_grad=$g \
    | tail -1 | sed "s/^/$g: /" >>"$OUT/conv_grad.txt"
done
log "5. where the host's time goes in the batch-256 loop (cProfile, top 30 by own time)"
timeout 70 "$PY" -m cProfile -o "$OUT/e2e_256.prof" -m benchmarks.end_to_end --batch_size=256 \
  --steps=300 --policies=fixed --pipelines=device >/dev/null 2>&1
"$PY" -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(30)" \
  "$OUT/e2e_256.prof" >"$OUT/e2e_256_profile.txt" 2>&1
log "done"
