"""The on-disk layout of work directories; the one module that knows their file names.

A LORO work directory (`run.py`, `painseeker train-final`):

  config.json               the configuration it belongs to (`check_config`)
  results.json, results.md  per-rat and pooled scores (present = the run finished)
  predictions.csv           one row per test image
  attention.npz             PainSeeker's attention of every test image
  fold_rat<k>/checkpoints/  orbax checkpoints of the fold holding out rat k
  fold_rat<k>/tb/           TensorBoard event files
  final/                    the same for the model trained on every rat (held_out 0)
  run.lock                  held while a process trains the run (`claim`)

A leave-one-animal-out (LOAO) work directory of a lab's grimace set is the same, with one
`fold_<split>/` per held-out animal (its split name, e.g. `fold_animal_R01`), per-animal
scores and the animal columns in predictions.csv (`ANIMAL_PREDICTION_FIELDS`). A fold is
named by `fold_label(held_out)`: the rat number k (`rat<k>`) or the animal's split name.

An experiment work directory (Table 3, sensitivity) keeps one LORO work
directory per run under `runs/<method>/seed<k>/` (`run_dir`).

Everything is written atomically (a temporary file, then a rename), so a file
is either complete or absent. Imports neither JAX nor TensorFlow.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import socket
import sys
import time

import numpy as np

CONFIG_JSON = "config.json"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PREDICTIONS_CSV = "predictions.csv"
PREDICTION_FIELDS = ["filename", "rat_id", "pain_level", "pain", "p_pain", "pred"]
# predictions.csv of a lab's grimace set (rows with `animal_id` instead of `rat_id`).
ANIMAL_PREDICTION_FIELDS = [
  "filename",
  "animal_id",
  "session",
  "condition",
  "pain_level",
  "pain",
  "p_pain",
  "pred",
]
ATTENTION_NPZ = "attention.npz"
RUN_LOCK = "run.lock"

# Config fields that do not change results: a work directory accepts runs that differ only in
# them (multi_run, model.conv and eval_batch_size: up to float summation order;
# checkpoint_every_epochs: resuming is exact whatever the interval).
_IGNORED_FIELDS = ("progress", "input", "multi_run", "checkpoint_every_epochs", "eval_batch_size")
_IGNORED_MODEL_FIELDS = ("conv",)
# Config fields added after work directories were written; their absence means these values.
_ADDED_DEFAULTS = {
  "dtype": "float32",
  "optimizer.schedule": "constant",
  "optimizer.wd_params": "all",
  "scale": "rgs",
  "loss.lambda_au": 0.0,
}


def fold_label(held_out) -> str:
  """A fold's name in directories and messages: `rat<k>` for a held-out rat number k, the
  split name (e.g. `animal_R01`) for a held-out animal, `final` for 0 (nothing held out)."""
  if not held_out:
    return "final"
  return held_out if isinstance(held_out, str) else f"rat{held_out}"


def fold_dir(workdir: str, held_out) -> str:
  """`<workdir>/fold_rat<k>` or `<workdir>/fold_<split>` (`fold_label`); held_out 0 (trained
  on every rat or animal) -> `<workdir>/final`."""
  return os.path.join(workdir, f"fold_{fold_label(held_out)}" if held_out else "final")


def checkpoint_dir(workdir: str, held_out) -> str:
  """The fold's orbax checkpoint directory (absolute, as orbax wants it)."""
  return os.path.abspath(os.path.join(fold_dir(workdir, held_out), "checkpoints"))


def tensorboard_dir(workdir: str, held_out) -> str:
  return os.path.join(fold_dir(workdir, held_out), "tb")


def metrics_path(workdir: str, held_out) -> str:
  """`<fold dir>/metrics.jsonl`: the per-epoch training metrics (the training curves)."""
  return os.path.join(fold_dir(workdir, held_out), "metrics.jsonl")


def run_dir(workdir: str, name: str, seed: int) -> str:
  """`<workdir>/runs/<name>/seed<seed>`: one run of an experiment."""
  return os.path.join(workdir, "runs", name, f"seed{seed}")


def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_JSON)


def results_path(workdir: str) -> str:
  return os.path.join(workdir, RESULTS_JSON)


def attention_path(workdir: str) -> str:
  return os.path.join(workdir, ATTENTION_NPZ)


def is_finished(workdir: str) -> bool:
  """Whether the run wrote its results."""
  return os.path.exists(results_path(workdir))


def read_results(workdir: str) -> dict:
  with open(results_path(workdir), encoding="utf-8") as f:
    return json.load(f)


def read_config(workdir: str) -> dict:
  with open(config_path(workdir), encoding="utf-8") as f:
    return json.load(f)


def read_predictions(workdir: str) -> list[dict]:
  """The rows of predictions.csv, with numbers parsed."""
  with open(os.path.join(workdir, PREDICTIONS_CSV), newline="", encoding="utf-8") as f:
    return [
      dict(
        r,
        **({"rat_id": int(r["rat_id"])} if "rat_id" in r else {}),
        pain=int(r["pain"]),
        pred=int(r["pred"]),
        p_pain=float(r["p_pain"]),
      )
      for r in csv.DictReader(f)
    ]


def read_attention(workdir: str):
  """attention.npz: `filename` (N,) and `beta` (N x K), aligned with predictions.csv."""
  return np.load(attention_path(workdir))


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename (never half-written)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, data) -> None:
  write_atomic(path, json.dumps(data, indent=2) + "\n")


def write_results(workdir: str, results: dict, markdown: str, rows: list[dict]) -> None:
  """results.json, results.md, predictions.csv and (rows with `beta`) attention.npz."""
  write_json(results_path(workdir), results)
  write_atomic(os.path.join(workdir, RESULTS_MD), markdown)
  buf = io.StringIO()
  # Models with AU heads add their AU columns (loro.au_columns) after the pain columns.
  au = [k for k in rows[0] if k.startswith("au_") or k == "grimace_score"] if rows else []
  fields = ANIMAL_PREDICTION_FIELDS if rows and "animal_id" in rows[0] else PREDICTION_FIELDS
  w = csv.DictWriter(buf, fieldnames=fields + au, extrasaction="ignore", lineterminator="\n")
  w.writeheader()
  floats = [k for k in au if isinstance(rows[0][k], float)]
  for r in rows:
    w.writerow(dict(r, p_pain=f"{r['p_pain']:.6f}", **{k: f"{r[k]:.4f}" for k in floats}))
  write_atomic(os.path.join(workdir, PREDICTIONS_CSV), buf.getvalue())
  if rows and rows[0].get("beta") is not None:  # PainSeeker's attention, for the analyses
    tmp = os.path.join(workdir, f"attention.tmp{os.getpid()}.npz")
    np.savez(
      tmp,
      filename=np.array([r["filename"] for r in rows]),
      beta=np.stack([r["beta"] for r in rows]),
    )
    os.replace(tmp, attention_path(workdir))


def _comparable(config_dict: dict) -> dict:
  return {
    k: ({n: x for n, x in v.items() if n not in _IGNORED_MODEL_FIELDS} if k == "model" else v)
    for k, v in config_dict.items()
    if k not in _IGNORED_FIELDS
  }


def config_differences(config, workdir: str) -> list[str] | None:
  """The top-level config fields in which `workdir`'s config.json differs from `config` ([] if
  none), or None if it has no config.json."""
  if not os.path.exists(config_path(workdir)):
    return None
  current = json.loads(config.to_json_best_effort())
  saved = read_config(workdir)
  for key, value in _ADDED_DEFAULTS.items():  # fields added later: absent means the default
    *parents, name = key.split(".")
    cur, old = current, saved
    for p in parents:
      cur, old = cur.get(p), old.get(p)
      if not isinstance(cur, dict) or not isinstance(old, dict):
        break
    else:
      if name in cur:
        old.setdefault(name, value)
  if _comparable(saved) == _comparable(current):
    return []
  return sorted(
    k
    for k in set(saved) | set(current)
    if k not in _IGNORED_FIELDS and saved.get(k) != current.get(k)
  )


def check_config(config, workdir: str) -> None:
  """A work directory belongs to one configuration: refuses another one (ValueError),
  else writes config.json (creating the directory)."""
  diff = config_differences(config, workdir)
  if diff:
    raise ValueError(
      f"{workdir} holds a run with another configuration (differs in: "
      f"{', '.join(diff)}); use a new --workdir or the same config."
    )
  os.makedirs(workdir, exist_ok=True)
  write_json(config_path(workdir), json.loads(config.to_json_best_effort()))


_HELD: set[str] = set()  # lock files this process holds (a nested claim of one is granted)


def lock_holder(workdir: str) -> str:
  """Who wrote `<workdir>/run.lock` last (process id, host, start time, command), or ''."""
  try:
    with open(os.path.join(workdir, RUN_LOCK), encoding="utf-8") as f:
      return f.read().strip()
  except OSError:
    return ""


@contextlib.contextmanager
def claim(workdir: str, wait: bool):
  """Yields whether this process holds `<workdir>/run.lock` (an advisory `flock`, released when
  the process ends); the holder writes who it is into the file. wait=True blocks until it does.
  A process that already holds the lock is granted it again (nested claims)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.realpath(os.path.join(workdir, RUN_LOCK))
  if path in _HELD:
    yield True
    return
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      yield False
      return
    try:
      f.seek(0)
      f.truncate()
      started = time.strftime("%Y-%m-%d %H:%M:%S")
      f.write(
        f"pid {os.getpid()} on {socket.gethostname()} since {started}: {' '.join(sys.argv)}\n"
      )
      f.flush()
      _HELD.add(path)
      yield True
    finally:
      _HELD.discard(path)
      fcntl.flock(f, fcntl.LOCK_UN)


def checkpoint_manager(workdir: str, held_out, *, create: bool = True):
  """The fold's orbax CheckpointManager (`create=False`: read only). It keeps the two latest
  checkpoints, so a crash that damages the newest one costs one epoch, not the fold."""
  import orbax.checkpoint as ocp  # noqa: PLC0415  (not needed to read results)

  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True) if create else None
  return ocp.CheckpointManager(checkpoint_dir(workdir, held_out), options=options)


def set_aside_checkpoint(workdir: str, held_out, step: int) -> str:
  """Moves an unreadable checkpoint step out of the checkpoint directory (kept for inspection
  under `<fold>/broken_checkpoints/`); returns where it went."""
  dest_dir = os.path.join(fold_dir(workdir, held_out), "broken_checkpoints")
  os.makedirs(dest_dir, exist_ok=True)
  dest = os.path.join(dest_dir, f"{step}.{int(time.time())}")
  os.replace(os.path.join(checkpoint_dir(workdir, held_out), str(step)), dest)
  return dest
