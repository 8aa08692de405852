r"""The `painseeker` command (also `python -m painseeker_jax`; `python run.py` is `painseeker run`).

  painseeker run --config=configs/loro.py:synthetic
  painseeker train-final --config=configs/loro.py:synthetic --output models/painseeker_synthetic
  painseeker predict --model models/painseeker_synthetic --output scores.csv faces/
  painseeker predict --model runs/loro_synthetic --output scores.csv --heatmaps maps/ video.mp4
  painseeker predict --model models/m --output cage.csv --boxes cageDLC_resnet50.h5 cage.mp4
  painseeker merge-runs gpu_runs.tar.gz runs/sensitivity_fitted
  painseeker compare-runs runs/table3/runs/painseeker/seed0 runs/table3/runs/resnet18/seed0

`run` and `train-final` take a config file (`path[:arg]`, big_vision style)
and `--config.x=y` overrides, parsed by one function (`load_config`,
ml_collections config_flags; overrides need the `=` form).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

COMMANDS = {
  "run": "run the experiment of a config (LORO, Table 3 or sensitivity) in a work directory",
  "train-final": "train on every rat (or every animal of a lab's set; nothing held out) and "
  "export a model directory",
  "predict": "score face images, folders or videos with a model directory or a LORO work directory",
  "pretrain-trunk": "pretrain a ResNet-18 trunk on synthetic rats (head pose and identity, never "
  "pain): the twin's stand-in for ImageNet weights",
  "merge-runs": "bring the finished runs of an experiment work directory (Table 3, sensitivity) "
  "filled on another machine into this one's, or pack them into an archive",
  "compare-runs": "two finished runs on the same test images, paired image by image: each one's "
  "scores, the difference with its bootstrap CI, McNemar's test",
}


def _command(sub, name: str, description: str, epilog: str | None = None):
  """Subcommand `name`: its COMMANDS line as help, and that line then `description` as its
  description."""
  return sub.add_parser(
    name,
    help=COMMANDS[name],
    allow_abbrev=False,
    description=f"{COMMANDS[name]}. {description}",
    epilog=epilog,
  )


def _config_command(sub, name: str, description: str) -> argparse.ArgumentParser:
  """A subcommand that takes a config file plus `--config.x=y` overrides (see `load_config`)."""
  c = _command(
    sub,
    name,
    description,
    "Config overrides, e.g. --config.seed=1 --config.num_epochs=10 (the `=` form only).",
  )
  c.add_argument(
    "--config",
    required=True,
    metavar="FILE[:ARG]",
    help="config file (e.g. configs/loro.py:synthetic)",
  )
  return c


def _parser() -> argparse.ArgumentParser:
  from painseeker_jax import quality, tracking  # light (numpy, PIL): the options' defaults

  p = argparse.ArgumentParser(
    prog="painseeker",
    allow_abbrev=False,
    description="PainSeeker (JAX): rat pain from facial images.",
    epilog="Run `painseeker COMMAND --help` for the options of a command.",
  )
  sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
  sub.required = True

  r = _config_command(
    sub, "run", "Rerunning the same command on the same --workdir resumes where it stopped."
  )
  r.add_argument("--workdir", metavar="DIR", help="work directory (default runs/<config name>)")
  r.add_argument(
    "--verbose", action="store_true", help="also show the libraries' INFO messages (orbax, tfds)"
  )

  t = _config_command(
    sub,
    "train-final",
    "The model directory holds the parameters, batch statistics, config, preprocessing, class "
    "names and a format version, so prediction needs neither the work directory nor the data.",
  )
  t.add_argument("--output", required=True, metavar="DIR", help="model directory to write")
  t.add_argument(
    "--workdir",
    metavar="DIR",
    help="training work directory (default runs/<config name>, the LORO or LOAO run's; the "
    "checkpoints go to <workdir>/final and a rerun resumes)",
  )
  t.add_argument("--overwrite", action="store_true", help="replace an existing --output")

  w = _config_command(
    sub,
    "pretrain-trunk",
    "Writes a torchvision-layout .safetensors state dict, the format "
    "--config.model.pretrained=<file> reads; rerunning the command resumes.",
  )
  w.add_argument("--output", required=True, metavar="FILE", help="the .safetensors file to write")
  w.add_argument(
    "--workdir", metavar="DIR", help="pool shards and checkpoints (default runs/<config name>)"
  )
  w.add_argument("--overwrite", action="store_true", help="replace an existing --output")

  m = _command(
    sub,
    "merge-runs",
    "Copies each finished run's results, predictions, attention, config and training curves (not "
    "its checkpoints); a run this work directory has finished is kept, one it has only started is "
    "replaced, one in use or with another config is skipped. Rerun the experiment's command "
    "afterwards to rewrite its table or figure.",
    "e.g. painseeker merge-runs gpu_runs.tar.gz runs/sensitivity_fitted",
  )
  m.add_argument("src", metavar="SRC", help="work directory, or .tar.gz written by merge-runs")
  m.add_argument("dest", metavar="DEST", help="work directory, or a new .tar.gz to write")

  d = _command(
    sub,
    "compare-runs",
    "Prints a Markdown report (a − b): per animal and pooled F1 / accuracy, the share of images "
    "predicted alike, ΔF1 and Δaccuracy with a paired bootstrap (images resampled within each "
    "animal) and the exact McNemar test.",
    "A run is one directory with results.json and predictions.csv, e.g. "
    "runs/sensitivity_fitted/runs/<setting>/seed0.",
  )
  d.add_argument("run_a", metavar="RUN_A", help="a finished run's directory")
  d.add_argument("run_b", metavar="RUN_B", help="another one, scored on the same images")
  d.add_argument(
    "--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)"
  )
  d.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")

  q = _command(
    sub,
    "predict",
    "Inputs are face crops (as in RatsPain), or whole frames with --crop (a fixed camera) or "
    "--boxes (the face in every frame, from the lab's DeepLabCut, SLEAP or detector output); no "
    "face detector is bundled.",
  )
  q.add_argument(
    "paths",
    nargs="+",
    metavar="PATH",
    help="image files, folders (recursive), globs (quoted) or videos",
  )
  q.add_argument(
    "--model",
    required=True,
    metavar="DIR",
    help="model directory (train-final) or LORO work directory (fold ensemble)",
  )
  q.add_argument("--output", required=True, metavar="CSV", help="CSV file to write")
  q.add_argument(
    "--heatmaps",
    metavar="DIR",
    help="write attention heat-map PNGs into DIR (not an input folder, not inside one, and "
    "holding no input files)",
  )
  # Not both (checked by predict.video_sampling, with the other option values).
  q.add_argument(
    "--every-seconds",
    type=float,
    metavar="S",
    help="videos: score one frame every S seconds (default 1)",
  )
  q.add_argument(
    "--every-frames",
    type=int,
    metavar="N",
    help="videos: score every N-th frame (instead of --every-seconds)",
  )
  q.add_argument(
    "--crop",
    metavar="x,y,w,h",
    help="cut this box (pixels) out of every image and frame before scoring",
  )
  q.add_argument(
    "--boxes",
    action="append",
    default=[],
    metavar="FILE",
    help="face boxes per frame: a DeepLabCut output (.h5/.csv), a SLEAP analysis file (.h5) "
    "or a CSV video,frame,x,y,w,h[,animal][,score] (or image,x,y,w,h[,...] for images); "
    "repeat for several videos (matched by file name) or write VIDEO=FILE",
  )
  q.add_argument(
    "--face-keypoints",
    metavar="A,B,C",
    help="the keypoints that outline the face (default: the eyes, ears and nose/snout under "
    "their common names)",
  )
  q.add_argument(
    "--min-likelihood",
    type=float,
    default=tracking.DEFAULT_MIN_LIKELIHOOD,
    metavar="P",
    help=f"keypoints (or CSV boxes) below this confidence are ignored (default "
    f"{tracking.DEFAULT_MIN_LIKELIHOOD:g}, DeepLabCut's pcutoff)",
  )
  q.add_argument(
    "--min-keypoints",
    type=int,
    default=tracking.DEFAULT_MIN_KEYPOINTS,
    metavar="N",
    help=f"confident face keypoints needed for a box; fewer: skipped=no_face "
    f"(default {tracking.DEFAULT_MIN_KEYPOINTS})",
  )
  q.add_argument(
    "--min-sharpness",
    type=float,
    default=quality.DEFAULT_MIN_SHARPNESS,
    metavar="S",
    help=f"crops less sharp are skipped=blurred (default {quality.DEFAULT_MIN_SHARPNESS:g}; "
    "0: no check; docs/results.md 'The frame-quality gate')",
  )
  q.add_argument(
    "--min-exposure",
    type=float,
    default=quality.DEFAULT_MIN_EXPOSURE,
    metavar="E",
    help=f"crops darker (mean luma 0..1) are skipped=dark (default "
    f"{quality.DEFAULT_MIN_EXPOSURE:g}; 0: no check)",
  )
  q.add_argument("--batch-size", type=int, default=64, metavar="B", help="batch size (default 64)")
  q.add_argument("--threads", type=int, default=4, metavar="N", help="decoding threads (default 4)")
  q.add_argument(
    "--overwrite", action="store_true", help="replace existing output files (CSV, heat maps, plots)"
  )
  q.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p


def _setup_logging() -> None:
  from painseeker_jax import writers

  writers.console_logging()


def load_config(config_arg: str, overrides: list[str]):
  """A config file (`path[:arg]`) with `--config.x=y` overrides -> the locked config.

  Raises ValueError naming the bad argument (an unknown field, a wrong type, not the
  `--config.field=value` form).
  """
  from absl import flags
  from ml_collections import config_flags

  bad = [a for a in overrides if not a.startswith("--config.") or "=" not in a]
  if bad:
    raise ValueError(
      f"unrecognised argument(s) {' '.join(bad)} (config overrides take the "
      "form --config.field=value)"
    )

  _importable_configs(config_arg)
  argv = ["painseeker", f"--config={config_arg}"] + list(overrides)
  fv = flags.FlagValues()
  holder = config_flags.DEFINE_config_file(
    "config", None, "config file", flag_values=fv, lock_config=True, sys_argv=argv
  )
  try:
    fv(argv)
  except AttributeError as e:  # ml_collections: an override of a field the config lacks
    inner = e.args[0] if e.args else e
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
    field, *hint = str(text).strip().splitlines()
    field = field.strip("'\"")  # KeyError's text quotes the name
    raise ValueError(
      f"--config {config_arg}: no field {field!r} to override "
      f"({' '.join(hint) or 'check the spelling against the config file'}; a nested field is "
      "--config.group.field=value)"
    ) from None
  except Exception as e:  # absl and ml_collections raise many types
    msg = str(e).strip().splitlines()
    raise ValueError(f"--config {config_arg} {' '.join(overrides)}: {' '.join(msg[:4])}") from None
  config = holder.value
  for a in overrides:
    _split_string_list(config, a[len("--config.") :].split("=", 1)[0])
  return config


def _importable_configs(config_arg: str) -> None:
  """Config files build on each other (`from configs import loro`): that import needs the
  folder above `configs/` on sys.path. `python run.py` has it (the script's folder); the
  `painseeker` command, started from anywhere, gets it here."""
  folder = os.path.dirname(os.path.abspath(config_arg.split(":", 1)[0]))
  if os.path.basename(folder) == "configs":
    root = os.path.dirname(folder)
    if root not in [os.path.abspath(p) for p in sys.path if p]:
      sys.path.insert(0, root)


def _split_string_list(config, field: str) -> None:
  """`--config.methods=a,b` -> ("a", "b"). config_flags reads a tuple override with
  `literal_eval`, which turns numbers separated by commas into a tuple but leaves words as
  one string ("a,b",); words are split here so both kinds of list take the same form."""
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  value = node[leaf]
  if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], str):
    if "," in value[0]:
      node[leaf] = tuple(v.strip() for v in value[0].split(",") if v.strip())


def pretrain_trunk(args, overrides: list[str]) -> int:
  config = load_config(args.config, overrides)
  if os.path.lexists(args.output) and not args.overwrite:
    raise ValueError(f"{args.output} already exists; use --overwrite to replace it")
  out_dir = os.path.dirname(os.path.abspath(args.output))
  if not os.path.isdir(out_dir):
    raise ValueError(f"{out_dir}: the folder for --output does not exist")
  _setup_logging()
  from painseeker_jax import pretrain

  workdir = args.workdir or os.path.join("runs", config.name)
  results = pretrain.run(config, workdir, args.output)
  held = results["held_out"]
  scores = (
    f"held-out pose error (deg) {held['pose_mae_deg']}, identity accuracy "
    f"{held['identity_accuracy']} (chance {held['identity_chance']})"
    if held
    else "no image held out (val_per_rat 0)"
  )
  print(
    f"painseeker pretrain-trunk: wrote {args.output}; {scores}; details: "
    f"{os.path.join(workdir, pretrain.RESULTS_JSON)}"
  )
  return 0


def run(args, overrides: list[str]) -> int:
  config = load_config(args.config, overrides)
  from painseeker_jax import experiments, writers

  writers.console_logging(quiet_libraries=not args.verbose)
  experiments.run(config, args.workdir or os.path.join("runs", config.name))
  return 0


def train_final(args, overrides: list[str]) -> int:
  config = load_config(args.config, overrides)
  if os.path.lexists(args.output) and not args.overwrite:
    raise ValueError(f"{args.output} already exists; use --overwrite to replace it")
  _setup_logging()
  from painseeker_jax import export, input_pipeline, layout, loro, sharding, train

  trainer = train.make_trainer(config)  # validates the config before anything is written
  workdir = args.workdir or os.path.join("runs", config.name)
  groups = input_pipeline.get_groups(config)  # a lab's set: built on first use
  train_split = groups.fold_splits(0)[0]  # every rat, or every animal with labelled images
  sources = input_pipeline.get_sources(
    config.dataset, [train_split], config.data_dir, config.manual_dir, config.scale
  )
  indices = input_pipeline.labelled_indices(sources[train_split])
  train.check_batch_fits(config, len(indices), train_split)
  final_dir = layout.fold_dir(workdir, 0)
  with layout.claimed(final_dir, "train-final", "wait for it to finish"):
    layout.check_config(config, workdir)  # the final model shares its LORO/LOAO run's config
    loro.check_training_data(config, workdir, sources[train_split])  # and its data
    logging.getLogger("painseeker").info("%s", sharding.describe(trainer.mesh, config.batch_size))
    variables = train.train_fold(trainer, workdir, 0, sources[train_split], indices)
  training = {
    "held_out": None,
    "split": train_split,
    "num_images": len(indices),
    "steps": len(indices) // config.batch_size * config.num_epochs,
    "workdir": os.path.abspath(workdir),
  }
  if layout.is_finished(workdir):  # the LORO (LOAO) estimate of how well the config generalises
    training[f"{groups.pooled}_estimate"] = layout.read_results(workdir).get(groups.pooled)
  path = export.save_model(
    args.output, config, variables, overwrite=args.overwrite, training=training
  )
  print(
    f"painseeker train-final: trained on {train_split} ({len(indices)} images); "
    f"model directory {path}"
  )
  return 0


def merge_runs(args) -> int:
  from painseeker_jax import layout

  report = layout.merge_runs(args.src, args.dest)
  for what in ("copied", "replaced", "kept", "skipped"):
    runs = report[what]
    print(f"{what}: {len(runs)} run{'s' * (len(runs) != 1)}")
    for r in runs:
      print(f"  {r}")
  return 0


def compare_runs(args) -> int:
  from painseeker_jax import experiments, layout

  if args.bootstrap < 1:
    raise ValueError(f"--bootstrap {args.bootstrap}: give a number of resamples >= 1")
  result = experiments.compare_runs(args.run_a, args.run_b, n_boot=args.bootstrap)
  if args.json:
    layout.write_json(args.json, result)
  print(experiments.comparison_markdown(result), end="")
  return 0


def predict(args) -> int:
  from painseeker_jax import predict as predict_lib

  try:
    crop = predict_lib.parse_crop(args.crop) if args.crop else None
  except ValueError as e:
    raise predict_lib.UsageError(str(e)) from None
  opts = predict_lib.Options(
    model=args.model,
    output=args.output,
    paths=list(args.paths),
    heatmaps=args.heatmaps,
    every_seconds=args.every_seconds,
    every_frames=args.every_frames,
    crop=crop,
    boxes=list(args.boxes),
    face_keypoints=[k.strip() for k in args.face_keypoints.split(",") if k.strip()]
    if args.face_keypoints
    else None,
    min_likelihood=args.min_likelihood,
    min_keypoints=args.min_keypoints,
    min_sharpness=args.min_sharpness,
    min_exposure=args.min_exposure,
    batch_size=args.batch_size,
    overwrite=args.overwrite,
    num_threads=args.threads,
    progress=False if args.no_progress else None,
  )
  opts = predict_lib.validate_options(opts)  # usage errors before anything else happens
  _setup_logging()
  return predict_lib.run(opts)


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
  try:
    if args.command == "run":
      return run(args, rest)
    if args.command == "pretrain-trunk":
      return pretrain_trunk(args, rest)
    if args.command == "train-final":
      return train_final(args, rest)
    if rest:
      parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command == "merge-runs":
      return merge_runs(args)
    if args.command == "compare-runs":
      return compare_runs(args)
    return predict(args)
  except Exception as e:
    if not isinstance(e, _user_errors()) or not _raised_by_us(e):
      raise  # a bug: the traceback is what a report needs
    print(f"painseeker {args.command}: error: {e}", file=sys.stderr)
    return 2


# Errors whose message tells the user what to do (exit status 2, no traceback), by the module that
# defines them; a module that was never imported cannot have raised its error.
_USER_ERRORS = (
  ("tfds_ratspain.build", "DataError"),
  ("painseeker_jax.pretrained", "PretrainedWeightsError"),
  ("painseeker_jax.predict", "UsageError"),
)


def _user_errors() -> tuple[type, ...]:
  found = [getattr(sys.modules[m], name) for m, name in _USER_ERRORS if m in sys.modules]
  return (ValueError, FileExistsError, *found)


# Packages whose ValueErrors are messages to the user (checks of config fields, arguments, files).
_OUR_PACKAGES = ("painseeker_jax", "tfds_ratspain", "configs")


def _raised_by_us(e: BaseException) -> bool:
  """Whether a ValueError was raised by this project's code (a check with a message for the
  user), not inside a library (numpy, JAX, ...: a bug, which keeps its traceback). The project's
  own error classes and FileExistsError count as raised by us wherever they come from."""
  if not isinstance(e, ValueError) or type(e).__module__.split(".")[0] in _OUR_PACKAGES:
    return True
  tb = e.__traceback__
  while tb.tb_next is not None:  # the innermost Python frame: where the raise happened
    tb = tb.tb_next
  return tb.tb_frame.f_globals.get("__name__", "").split(".")[0] in _OUR_PACKAGES


if __name__ == "__main__":
  sys.exit(main())
