"""Images/s of the training input pipeline (decode, resize, random crop, flip, batch).

  python benchmarks/input_pipeline.py [--dataset synthetic] [--sizes 224/256,96/112]
      [--settings 1/0,2/0,2/0/cache] [--epochs 2]

Prints images/s for several settings (threads/processes, `/cache`: a fold's
`DecodedCache`, as training uses it), per epoch of the five-rat training split of
fold rat1, so that it can be compared with what a training step consumes
(benchmarks/README.md). With the cache the first epoch decodes, the later ones
do not.
"""

import argparse
import time

from painseeker_jax import input_pipeline as ip


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--dataset", default="synthetic")
  p.add_argument("--data_dir", default=None)
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--sizes", default="224/256,96/112", help="image_size/resize_size pairs")
  p.add_argument(
    "--settings",
    default="1/0,2/0,4/0,4/2,2/0/cache",
    help="num_threads/num_workers[/cache] settings",
  )
  p.add_argument("--epochs", type=int, default=2)
  args = p.parse_args()
  train_split = ip.fold_splits(1)[0]
  src = ip.get_sources(args.dataset, [train_split], args.data_dir)[train_split]
  idx = ip.labelled_indices(src)
  print(
    f"dataset ratspain/{args.dataset}, split {train_split}: {len(idx)} training images, "
    f"batch {args.batch_size}"
  )
  for size in args.sizes.split(","):
    image_size, resize_size = map(int, size.split("/"))
    for setting in args.settings.split(","):
      threads, workers, *cached = setting.split("/")
      threads, workers = int(threads), int(workers)
      cache = ip.DecodedCache(2**40) if cached == ["cache"] else None
      rates = []
      for epoch in range(args.epochs):
        t0 = time.perf_counter()
        n = 0
        for batch in ip.train_batches(
          src,
          idx,
          batch_size=args.batch_size,
          image_size=image_size,
          resize_size=resize_size,
          seed=epoch,
          num_threads=threads,
          num_workers=workers,
          cache=cache,
        ):
          n += len(batch["label"])
        rates.append(f"{n / (time.perf_counter() - t0):8.1f}")
      print(
        f"image {image_size} (resize {resize_size}), threads {threads}, processes {workers}"
        f"{', cache' if cache is not None else ''}: images/s per epoch {' '.join(rates)}"
      )


if __name__ == "__main__":
  main()
