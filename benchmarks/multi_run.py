"""Several independent trainings in one program: one vmapped step vs. S sequential steps.

  python benchmarks/multi_run.py [--runs 6 --size tiny --image_size 64 --batch 8]
  python benchmarks/multi_run.py --size full --image_size 224 --batch 64   # the paper's setting

The paper's experiments are many identical small trainings (6 folds x methods x
seeds x a sensitivity grid). This measures, in one process and on the same
device, one training step of S independent PainSeeker models (their own
parameters, optimizer state and batch of `--batch` images each) done

  * sequentially: S calls of the jit-compiled `train.train_step` (what
    `config.multi_run="sequential"` does), and
  * vmapped: one jit-compiled `jax.vmap(train.train_step)` over the S states and
    batches stacked on a leading axis (the runs as one program),

and prints the median wall time of each, images/s and the ratio, after checking
that both give the same losses. `config.multi_run`'s default follows from it
(benchmarks/README.md, "Multi-run: vmapped vs. sequential").
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import loro  # noqa: E402
from painseeker_jax import inference, sharding, train  # noqa: E402


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--runs", type=int, default=6, help="S, the independent trainings")
  p.add_argument("--model", default="painseeker", choices=("painseeker", "resnet18"))
  p.add_argument("--size", default="tiny", choices=("tiny", "full"))
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--batch", type=int, default=8, help="images per run and step")
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()

  k = (args.image_size // 32) ** 2  # regions of the 32x-downsampling trunk
  config = loro.get_config("real")  # the paper's loss and optimizer
  config.model.pretrained = None
  config.model.name, config.model.size, config.model.conv = args.model, args.size, "xla"
  config.image_size = config.resize_size = args.image_size
  config.batch_size = args.batch
  config.loss.k_h = min(5, k - 1)
  mesh = sharding.make_mesh(jax.devices()[:1])  # one device: the comparison is per device
  trainer = train.make_trainer(config, mesh)
  init, seq_step = trainer.init, trainer.step
  vmap_step = jax.jit(
    jax.vmap(functools.partial(train.train_step, model=trainer.model, loss_cfg=config.loss)),
    donate_argnums=0,
  )

  rng = np.random.default_rng(0)
  S, B = args.runs, args.batch
  images = rng.integers(0, 256, (S, B, args.image_size, args.image_size, 3), dtype=np.uint8)
  labels = rng.integers(0, 2, (S, B)).astype(np.int32)
  batches = [jax.device_put({"image": images[s], "label": labels[s]}) for s in range(S)]
  stacked_batch = jax.device_put({"image": images, "label": labels})
  keys = [jax.random.key(100 + s) for s in range(S)]
  stacked_keys = jnp.stack(keys)
  fresh = lambda: [init(jax.random.key(s)) for s in range(S)]  # noqa: E731

  print(
    f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {S} runs x batch {B} at "
    f"{args.image_size}px, {args.model} size={args.size}"
  )

  # Same numbers both ways (first step from the same initial states).
  states = fresh()
  seq_loss = [float(seq_step(st, b, kk)[1]["loss"]) for st, b, kk in zip(states, batches, keys)]
  stacked, out = vmap_step(inference.stack_variables(fresh()), stacked_batch, stacked_keys)
  diff = float(np.max(np.abs(np.asarray(out["loss"]) - np.asarray(seq_loss))))
  print(f"first-step losses, max |vmap - sequential| = {diff:.2e}")

  def run_sequential(states):
    outs = []
    for s in range(S):
      states[s], o = seq_step(states[s], batches[s], keys[s])
      outs.append(o)
    jax.block_until_ready(outs)
    return states

  def run_vmap(stacked):
    stacked, o = vmap_step(stacked, stacked_batch, stacked_keys)
    jax.block_until_ready(o)
    return stacked

  times = {}
  states = run_sequential(fresh())  # warm up (compiled above)
  stacked = run_vmap(stacked)
  for name in ("sequential", "vmap"):
    ts = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      if name == "sequential":
        states = run_sequential(states)
      else:
        stacked = run_vmap(stacked)
      ts.append(time.perf_counter() - t0)
    times[name] = statistics.median(ts)
    print(
      f"{name:10s}: median {times[name] * 1e3:.1f} ms per step of all {S} runs "
      f"(min {min(ts) * 1e3:.1f}, max {max(ts) * 1e3:.1f}), {S * B / times[name]:.1f} images/s"
    )
  ratio = times["sequential"] / times["vmap"]
  print(f"ratio_vmap_speedup={ratio:.3f}  (>1: vmap faster; <1: sequential faster)")
  print(
    json.dumps(
      {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "runs": S,
        "batch": B,
        "image_size": args.image_size,
        "model": args.model,
        "size": args.size,
        "sequential_s": times["sequential"],
        "vmap_s": times["vmap"],
        "ratio": ratio,
        "loss_max_abs_diff": diff,
      }
    )
  )


if __name__ == "__main__":
  main()
