r"""The `painseeker` command (also `python -m painseeker_jax`).

  painseeker train-final --config=configs/loro.py:synthetic --output models/painseeker_synthetic
  painseeker predict --model models/painseeker_synthetic --output scores.csv faces/
  painseeker predict --model runs/loro_synthetic --output scores.csv --heatmaps maps/ video.mp4

`train-final` takes the same config files and `--config.x=y` overrides as
run.py (ml_collections config_flags; overrides need the `=` form).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

COMMANDS = {
    "train-final": "train on all six rats (no held-out rat) and export a model directory",
    "predict": "score face images, folders or videos with a model directory or a LORO work directory",
}


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="painseeker", allow_abbrev=False,
      description="PainSeeker (JAX): rat pain from facial images.",
      epilog="Run `painseeker COMMAND --help` for the options of a command.")
  sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
  sub.required = True

  t = sub.add_parser("train-final", help=COMMANDS["train-final"], allow_abbrev=False,
                     description=COMMANDS["train-final"] + ". The model directory holds the "
                     "parameters, batch statistics, config, preprocessing, class names and a "
                     "format version, so prediction needs neither the work directory nor the data.",
                     epilog="Config overrides as in run.py, e.g. --config.seed=1 "
                     "--config.num_epochs=10 (the `=` form only).")
  t.add_argument("--config", required=True, metavar="FILE[:ARG]",
                 help="config file, as for run.py (e.g. configs/loro.py:synthetic)")
  t.add_argument("--output", required=True, metavar="DIR", help="model directory to write")
  t.add_argument("--workdir", metavar="DIR",
                 help="training work directory (default runs/<config name>, the LORO run's; the "
                      "checkpoints go to <workdir>/final and a rerun resumes)")
  t.add_argument("--overwrite", action="store_true", help="replace an existing --output")

  q = sub.add_parser("predict", help=COMMANDS["predict"], allow_abbrev=False,
                     description=COMMANDS["predict"] + ". Inputs are face crops (as in RatsPain); "
                     "automatic face detection is not provided: use --crop for a fixed camera.")
  q.add_argument("paths", nargs="+", metavar="PATH",
                 help="image files, folders (recursive), globs (quoted) or videos")
  q.add_argument("--model", required=True, metavar="DIR",
                 help="model directory (train-final) or LORO work directory (fold ensemble)")
  q.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
  q.add_argument("--heatmaps", metavar="DIR", help="write attention heat-map PNGs into DIR")
  g = q.add_mutually_exclusive_group()
  g.add_argument("--every-seconds", type=float, metavar="S",
                 help="videos: score one frame every S seconds (default 1)")
  g.add_argument("--every-frames", type=int, metavar="N", help="videos: score every N-th frame")
  q.add_argument("--crop", metavar="x,y,w,h",
                 help="cut this box (pixels) out of every image and frame before scoring")
  q.add_argument("--batch-size", type=int, default=64, metavar="B", help="batch size (default 64)")
  q.add_argument("--threads", type=int, default=4, metavar="N", help="decoding threads (default 4)")
  q.add_argument("--overwrite", action="store_true",
                 help="replace existing output files (CSV, heat maps, plots)")
  q.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def _setup_logging() -> None:
  from painseeker_jax import writers
  writers.console_logging()


def load_config(config_arg: str, overrides: list[str]):
  """A config file (`path[:arg]`) with `--config.x=y` overrides, parsed as run.py does."""
  from absl import flags
  from ml_collections import config_flags

  argv = ["painseeker", f"--config={config_arg}"] + list(overrides)
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv,
                                           lock_config=True, sys_argv=argv)
  try:
    fv(argv)
    return holder.value
  except Exception as e:  # absl and ml_collections raise many types
    msg = str(e).strip().splitlines()
    raise ValueError(f"--config {config_arg} {' '.join(overrides)}: {' '.join(msg[:4])}") from None


def train_final(args, overrides: list[str]) -> int:
  bad = [a for a in overrides if not a.startswith("--config.") or "=" not in a]
  if bad:
    raise ValueError(f"unrecognised argument(s) {' '.join(bad)} (config overrides take the "
                     "form --config.field=value)")
  config = load_config(args.config, overrides)
  if os.path.lexists(args.output) and not args.overwrite:
    raise ValueError(f"{args.output} already exists; use --overwrite to replace it")
  _setup_logging()
  from painseeker_jax import export, input_pipeline, train

  train.validate_config(config)
  workdir = args.workdir or os.path.join("runs", config.name)
  train._check_workdir_config(config, workdir)  # the final model shares its LORO run's config
  train_split = input_pipeline.fold_splits(0)[0]
  sources = input_pipeline.get_sources(config.dataset, [train_split], config.data_dir, config.manual_dir)
  indices = input_pipeline.labelled_indices(sources[train_split])
  variables = train.train_fold(config, workdir, 0, sources[train_split], indices)
  training = {"held_out": None, "split": train_split, "num_images": len(indices),
              "steps": len(indices) // config.batch_size * config.num_epochs,
              "workdir": os.path.abspath(workdir)}
  results = os.path.join(workdir, "results.json")
  if os.path.exists(results):  # the LORO estimate of how well this configuration generalises
    with open(results) as f:
      training["loro_estimate"] = json.load(f).get("loro")
  path = export.save_model(args.output, config, variables, overwrite=args.overwrite, training=training)
  print(f"painseeker train-final: trained on {train_split} ({len(indices)} images); "
        f"model directory {path}")
  return 0


def predict(args) -> int:
  from painseeker_jax import predict as predict_lib

  try:
    crop = predict_lib.parse_crop(args.crop) if args.crop else None
  except ValueError as e:
    raise predict_lib.UsageError(str(e)) from None
  opts = predict_lib.Options(
      model=args.model, output=args.output, paths=list(args.paths), heatmaps=args.heatmaps,
      every_seconds=args.every_seconds, every_frames=args.every_frames, crop=crop,
      batch_size=args.batch_size, overwrite=args.overwrite, num_threads=args.threads,
      progress=False if args.no_progress else None)
  _setup_logging()
  return predict_lib.run(opts)


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  try:
    if args.command == "train-final":
      return train_final(args, rest)
    if rest:
      parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return predict(args)
  except (ValueError, FileExistsError) as e:
    print(f"painseeker {args.command}: error: {e}", file=sys.stderr)
    return 2
  except Exception as e:
    from painseeker_jax import predict as predict_lib
    if isinstance(e, predict_lib.UsageError):
      print(f"painseeker {args.command}: error: {e}", file=sys.stderr)
      return 2
    raise


if __name__ == "__main__":
  sys.exit(main())
