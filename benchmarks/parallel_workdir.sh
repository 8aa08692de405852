#!/usr/bin/env bash
# Several processes filling one experiment work directory (Table 3, Fig. 5) at once, with a deadline.
#
#   bash benchmarks/parallel_workdir.sh WORKERS SECONDS LOG_DIR -- <run.py arguments>
#   # e.g. Fig. 5 with three seeds, six processes sharing one GPU, at most 20 minutes:
#   bash benchmarks/parallel_workdir.sh 6 1200 runs/sens_logs -- --config=configs/sensitivity.py:synthetic \
#       --config.seeds=0,1,2 --workdir=runs/sensitivity_synthetic --config.progress=False \
#       --config.input.num_threads=2
#
# A training run of the synthetic twin keeps one GPU busy a small fraction of the time (small
# batches, a 160 px ResNet-18); several processes each claim the next unfinished run of the same
# work directory (painseeker_jax/experiments.py `_schedule`: a lock per run), so the GPU and the
# decoding threads stay busy. Each process gets an equal share of the GPU's memory. LOG_DIR gets
# one log per process and summary.txt; a process still running at the deadline is stopped (its
# unfinished run resumes from its last checkpoint next time). Run the command once more without
# this script to write the figure/table once every run exists.
set -uo pipefail
WORKERS=$1 SECONDS_LEFT=$2 LOG=$3
shift 3
[ "${1:-}" = "--" ] && shift
PYTHON=${PYTHON:-python}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(awk "BEGIN {print 0.9 / $WORKERS}")}
START=$(date +%s)
echo "$(date -u) $WORKERS workers, ${SECONDS_LEFT} s: $PYTHON run.py $*" | tee -a "$LOG/summary.txt"
pids=()
for i in $(seq 1 "$WORKERS"); do
  timeout --kill-after=10 "$SECONDS_LEFT" "$PYTHON" run.py "$@" > "$LOG/worker$i.log" 2>&1 &
  pids+=($!)
  sleep 2  # the first ones claim their runs before the next start
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  echo "worker$((i + 1)): rc=$? after $(( $(date +%s) - START )) s" | tee -a "$LOG/summary.txt"
done
grep -h -e "runs finished\]" -e ": F1 " "$LOG"/worker*.log | sort | tee -a "$LOG/summary.txt"
