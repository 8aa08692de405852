"""Fold-stacked evaluation: `vmap` vs. `map` over the leading fold axis.

  python benchmarks/eval_strategy.py [--folds 6 --batch 64 --image_size 224]

Evaluates F fold models (random weights, PainSeeker with the ResNet-18 trunk)
on one batch each, stacked on a leading axis, both ways, and prints the median
time per call and images/s side by side, plus the ratio. The default of
`config.eval.fold_strategy=auto` (map on CPU, vmap on GPU/TPU) follows from it.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from painseeker_jax import inference, loro, models


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--folds", type=int, default=6)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  model = models.create_model("painseeker", 2)
  x = jnp.zeros((1, args.image_size, args.image_size, 3))
  variables = inference.stack_variables(
    [jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(i)) for i in range(args.folds)]
  )
  images = np.random.default_rng(0).integers(
    0, 256, (args.folds, args.batch, args.image_size, args.image_size, 3), dtype=np.uint8
  )
  print(
    f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {args.folds} folds x batch "
    f"{args.batch} at {args.image_size}px"
  )
  times = {}
  for strategy in ("map", "vmap"):
    fn = loro.make_fold_eval(model, strategy)
    jax.block_until_ready(fn(variables, images))  # compile
    ts = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(variables, images))
      ts.append(time.perf_counter() - t0)
    times[strategy] = statistics.median(ts)
    print(
      f"{strategy:5s}: median {times[strategy]:.3f} s/call (min {min(ts):.3f}, max {max(ts):.3f}), "
      f"{args.folds * args.batch / times[strategy]:.1f} images/s"
    )
  print(f"ratio_vmap_over_map={times['map'] / times['vmap']:.3f}  (>1: vmap faster)")


if __name__ == "__main__":
  main()
