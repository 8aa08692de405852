#!/usr/bin/env bash
# Fills an experiment work directory (Table 3, Fig. 5) on a lent GPU machine and sends its
# finished runs back as one archive.
#
#   bash benchmarks/device_fill.sh LOG_DIR WORKERS WORKDIR -- <run.py arguments but --workdir>
#
# Run through benchmarks/on_device.sh (set-up; DEVICE_DEADLINE). WORKERS processes share the GPU
# (benchmarks/parallel_workdir.sh) until 60 s before the deadline; then the finished runs' record
# files (results, predictions, attention, configs, training curves; no checkpoints) are packed
# into LOG_DIR/runs.tar.gz (`painseeker merge-runs`), with fill_summary.txt and the tail of every
# worker's log in fill_workers.txt. TFDS_DATA_DIR defaults to .devcarry/tfds: carry the data set
# the runs here were trained on, so that every run of the work directory scores the same images.
# The whole procedure, here and there: benchmarks/README.md "On a GPU".
set -uo pipefail
OUT=$1 WORKERS=$2 WORKDIR=$3
shift 3
[ "${1:-}" = "--" ] && shift
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-$PWD/.devcarry/tfds}
LOGS=$(mktemp -d)
LEFT=$(( ${DEVICE_DEADLINE:?run through benchmarks/on_device.sh} - $(date +%s) - 60 ))
if [ "$LEFT" -lt 60 ]; then echo "only $LEFT s left: nothing started"; exit 1; fi
PYTHON=python bash benchmarks/parallel_workdir.sh "$WORKERS" "$LEFT" "$LOGS" -- "$@" \
  --workdir="$WORKDIR" --config.progress=False --config.input.num_threads=2
cp "$LOGS/summary.txt" "$OUT/fill_summary.txt"
for f in "$LOGS"/worker*.log; do
  echo "== $f"
  tr '\r' '\n' < "$f" | grep -v -i -e warning -e '^ *$' | tail -n 15
done > "$OUT/fill_workers.txt"
python -m painseeker_jax merge-runs "$WORKDIR" "$OUT/runs.tar.gz" | tee -a "$OUT/fill_summary.txt"
