#!/usr/bin/env bash
# The GPU work in one script, for a machine with an NVIDIA GPU and JAX with CUDA,
# Flax and PyTorch already installed (no network needed): each stage writes its
# log and results to $OUT (default benchmarks/results) and stops at its time limit.
#
#   bash benchmarks/gpu.sh tests kernel unroll      # stages, in order
#   bash benchmarks/gpu.sh suite
#
# Stages: env, tests (the suite on the GPU), kernel (jrnn/bench/persistent.py),
# unroll (jrnn/bench/unroll.py), suite (jrnn/bench/suite.py at S M L X with the
# T and B sweeps), linear (jrnn/bench/linear.py), remat, precision, and pack (every
# file under $OUT in one archive, $PACK: for a remote runner that returns few files).
# Each stage's arguments can be replaced through NAME_ARGS (e.g. SUITE_ARGS="--configs S X").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
# JAX and PyTorch share the GPU in one process (and test workers share it): JAX
# allocates on demand instead of taking 75% of the memory at its first use.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
start=$(date +%s)
left() { echo $(( ${BUDGET:-590} - ($(date +%s) - start) )); }
run() {  # run NAME LIMIT_S COMMAND...: a stage with its own log and time limit
  local name=$1 limit=$2; shift 2
  (( limit > $(left) )) && limit=$(left)
  if (( limit < 20 )); then echo "== $name: skipped, no time left"; return; fi
  echo "== $name (limit ${limit}s, $(left)s left)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - start ))s"
  tail -n "${TAIL:-25}" "$OUT/$name.log"
}
for stage in "$@"; do
  case $stage in
    env) nvidia-smi -L; $PY -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__, torch.cuda.is_available())" ;;
    tests) run tests "${TESTS_LIMIT:-300}" $PY -m pytest -q -n "${WORKERS:-8}" -p no:cacheprovider --durations=10 ${TESTS_ARGS:-} ;;
    kernel) run kernel "${KERNEL_LIMIT:-200}" $PY benchmarks/persistent.py --out "$OUT" ${KERNEL_ARGS:-} ;;
    unroll) run unroll "${UNROLL_LIMIT:-200}" $PY benchmarks/unroll.py --out "$OUT" ${UNROLL_ARGS:-} ;;
    suite) run suite "${SUITE_LIMIT:-560}" $PY benchmarks/suite.py --out "$OUT" ${SUITE_ARGS:---configs S M L X --sweeps T B} ;;
    linear) run linear "${LINEAR_LIMIT:-200}" $PY benchmarks/linear.py --out "$OUT" ${LINEAR_ARGS:---reps 5 --cells mingru minlstm lru} ;;
    remat) run remat "${REMAT_LIMIT:-120}" $PY benchmarks/remat_curve.py --out "$OUT" ${REMAT_ARGS:-} ;;
    precision) run precision "${PRECISION_LIMIT:-120}" $PY benchmarks/precision.py --out "$OUT" ${PRECISION_ARGS:-} ;;
    pack) tar czf "${PACK:?pack: set PACK to the path of the archive}" -C "$OUT" . && echo "== packed: $PACK" ;;
    *) echo "unknown stage: $stage" >&2; exit 2 ;;
  esac
done
