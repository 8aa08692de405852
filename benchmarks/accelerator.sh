#!/usr/bin/env bash
# The accelerator figures of benchmarks/README.md ("On a GPU"), in one go, with a deadline.
#
#   bash benchmarks/accelerator.sh [LOG_DIR] [SECONDS] [WORK_DIR]
#   # defaults: runs/accelerator, 3600 s, LOG_DIR/work
#
# In order of priority (the first GPU figures, 2026-11-30, reached step 5 of the earlier order:
# benchmarks/README.md "On a GPU"; the short measurements now come first). Each step gets the
# time left and is killed when it runs out, so the script ends within SECONDS plus the time a
# killed GPU process takes to exit (leave a margin of a minute or two under a hard limit).
# LOG_DIR receives only small files, as they are written: summary.txt and one log per step (at
# most 9 files); the twin and the runs' work directories go to WORK_DIR.
#   1. the synthetic twin (256 px faces), built with `python -m tfds_ratspain build`;
#   2. training-step and inference images/s at the paper's 224 px, batch 64, Flax vs. PyTorch
#      on the same GPU (benchmarks/train_throughput.py);
#   3. the input pipeline's images/s with the machine's threads, with and without the decoded-
#      image cache, and with worker processes (benchmarks/input_pipeline.py);
#   4. six trainings stacked in one vmapped step vs. one after another (benchmarks/multi_run.py),
#      which sets config.multi_run="auto" for the backend;
#   5. the training step in bfloat16 (Flax only);
#   6. the full protocol, 6 folds x 30 epochs at 224 px with the paper's recipe (from scratch,
#      on the synthetic twin), folds one after another, timed;
#   7. the full protocol again with the folds side by side (config.multi_run=vmap).
set -uo pipefail
OUT=${1:-runs/accelerator}
BUDGET=${2:-3600}
WORK=${3:-$OUT/work}
mkdir -p "$OUT" "$WORK"
START=$(date +%s)
export PYTHONUNBUFFERED=1
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-$WORK/tfds}
THREADS=$(nproc)

left() { echo $((BUDGET - ($(date +%s) - START))); }
step() {  # step NAME MIN_SECONDS COMMAND...: runs COMMAND with the time left, if at least MIN_SECONDS
  local name=$1 need=$2; shift 2
  local t; t=$(left)
  if [ "$t" -lt "$need" ]; then echo "== $name: skipped ($t s left, needs $need)" | tee -a "$OUT/summary.txt"; return; fi
  echo "== $name ($t s left): $*" | tee -a "$OUT/summary.txt"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$((t - 15))" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc, $(( $(date +%s) - t0 )) s; last lines:" | tee -a "$OUT/summary.txt"
  tr '\r' '\n' < "$OUT/$name.log" | grep -v -i -e warning -e '^ *$' -e 'it/s\]' -e 'examples/s\]' | tail -n 8 | sed 's/^/   | /' | tee -a "$OUT/summary.txt"
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  python -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  echo "$THREADS CPUs"; } 2>&1 | tee "$OUT/summary.txt"

step build 60 python -m tfds_ratspain build --config=synthetic --data_dir="$TFDS_DATA_DIR"
XLA_PYTHON_CLIENT_PREALLOCATE=false step throughput 90 \
  python benchmarks/train_throughput.py --batch 64 --eval_batch 64 --repeats 5 --steps 10 --convs xla
HALF=$(( THREADS / 2 > 1 ? THREADS / 2 : 1 ))
step input_pipeline 60 python benchmarks/input_pipeline.py --sizes 224/256 --epochs 2 \
  --settings "4/0,$THREADS/0,$THREADS/0/cache,2/$HALF"
step multi_run 120 python benchmarks/multi_run.py --size full --image_size 224 --batch 64 --runs 6 --repeats 3
XLA_PYTHON_CLIENT_PREALLOCATE=false step throughput_bf16 60 \
  python benchmarks/train_throughput.py --batch 64 --eval_batch 64 --repeats 5 --steps 10 --no_torch --dtype bfloat16 --convs xla
LORO=(python run.py --config=configs/loro.py --config.dataset=synthetic --config.model.pretrained=None
      --config.input.num_threads="$THREADS" --config.checkpoint_every_epochs=10 --config.progress=False)
step loro224_sequential 150 "${LORO[@]}" --config.multi_run=sequential --workdir="$WORK/loro224_sequential"
step loro224_vmap 150 "${LORO[@]}" --config.multi_run=vmap --workdir="$WORK/loro224_vmap"
for d in loro224_sequential loro224_vmap; do
  [ -f "$WORK/$d/results.md" ] && { echo "== $d/results.md"; cat "$WORK/$d/results.md"; } | tee -a "$OUT/summary.txt"
done
echo "total $(( $(date +%s) - START )) s" | tee -a "$OUT/summary.txt"
