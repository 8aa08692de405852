#!/usr/bin/env bash
# One call on a lent GPU machine: set up, then the accelerator figures (or COMMAND), with a deadline.
#
#   bash benchmarks/on_device.sh LOG_DIR SECONDS [-- COMMAND...]
#   # the device tool's run: carry [".whl"] (benchmarks/device_wheels.sh fills it here first),
#   # timeout_s 600, command: bash benchmarks/on_device.sh "$OUT" 400
#
# The machine (benchmarks/README.md "On a GPU") has JAX in /opt/torch/.venv, no `python` on PATH
# and no network. This script installs the carried wheels into SITE (default /tmp/site), puts a
# `python` that runs that interpreter first on PATH (a wrapper script: a symlink would lose the
# virtual environment), checks that everything imports and that JAX sees the GPU, and writes what
# it found to LOG_DIR/setup.log. Then it runs COMMAND, or by default benchmarks/accelerator.sh
# LOG_DIR with the seconds left (its work directory under /tmp/work). SECONDS covers everything,
# set-up included; keep it at most ~70% of the call's limit. COMMAND gets the end as DEVICE_DEADLINE
# (seconds since the epoch) and is killed then (benchmarks/device_fill.sh: an experiment's runs).
# DEVICE_PYTHON overrides the interpreter (a dry run here: a Python 3.12 virtual environment with
# the image's packages).
set -uo pipefail
OUT=$1 BUDGET=$2
shift 2
[ "${1:-}" = "--" ] && shift
START=$(date +%s)
PY=${DEVICE_PYTHON:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=$(command -v python3)
SITE=${SITE:-/tmp/site}
BIN=$(mktemp -d)
mkdir -p "$OUT"
LOG=$OUT/setup.log
{
  date -u
  echo "interpreter $PY"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
} > "$LOG" 2>&1 || { echo "installing .whl/*.whl failed:"; tail -n 20 "$LOG"; exit 1; }
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$BIN/python"
chmod +x "$BIN/python"
export PATH=$BIN:$PATH PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export DEVICE_DEADLINE=$((START + BUDGET))
python - >> "$LOG" 2>&1 <<'EOF' || { echo "import check failed:"; tail -n 20 "$LOG"; exit 1; }
import importlib.metadata as md
import jax
import flax, optax, orbax.checkpoint, grain, array_record, ml_collections, tensorboardX  # noqa
import tensorflow_datasets as tfds  # noqa
from painseeker_jax import train  # noqa
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "protobuf",
             "tensorflow-datasets", "grain", "torch"):
  try:
    print(name, md.version(name))
  except md.PackageNotFoundError:
    print(name, "missing")
print("devices", jax.devices())
EOF
cat "$LOG"
LEFT=$((BUDGET - ($(date +%s) - START)))
echo "set-up took $(( $(date +%s) - START )) s; $LEFT s left"
if [ $# -eq 0 ]; then
  exec bash benchmarks/accelerator.sh "$OUT" "$LEFT" /tmp/work
fi
exec timeout --kill-after=10 "$LEFT" "$@"
