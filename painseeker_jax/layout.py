"""The on-disk layout of work directories; the one module that knows their file names.

A LORO work directory (`run.py`, `painseeker train-final`):

  config.json               the configuration it belongs to (`check_config`)
  data.json                 the labelled images it trains and tests on (`check_data`)
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
directory per run under `runs/<method>/seed<k>/` (`run_dir`); `merge_runs` brings
the finished runs of another machine's copy into it.

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
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator

import numpy as np

CONFIG_JSON = "config.json"
DATA_JSON = "data.json"
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
METRICS_JSONL = "metrics.jsonl"
RUN_LOCK = "run.lock"

# Config fields that do not change results: a work directory accepts runs that differ only in
# them (multi_run, model.conv and eval_batch_size: up to float summation order;
# checkpoint_every_epochs: resuming is exact whatever the interval; lbp.num_workers: the
# feature processes, each image's features computed alone).
_IGNORED_FIELDS = ("progress", "input", "multi_run", "checkpoint_every_epochs", "eval_batch_size")
_IGNORED_SUBFIELDS = {"model": ("conv",), "lbp": ("num_workers",)}
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
  return os.path.join(fold_dir(workdir, held_out), METRICS_JSONL)


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


class RunFileError(ValueError):
  """A run's results.json, config.json or predictions.csv that cannot be read (damaged, edited,
  or not written by this tool); the message names the file (and line) and what to do."""


_DAMAGED = (
  "the file is damaged or was edited: restore it, or remove the run's directory to train the "
  "run again"
)


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise RunFileError(f"{path}: not valid JSON ({e}); {_DAMAGED}") from None
  if not isinstance(data, dict):
    raise RunFileError(f"{path}: holds a JSON {type(data).__name__}, not an object; {_DAMAGED}")
  return data


def read_results(workdir: str) -> dict:
  return _read_json(results_path(workdir))


def read_config(workdir: str) -> dict:
  return _read_json(config_path(workdir))


def read_predictions(workdir: str) -> list[dict]:
  """The rows of predictions.csv, with numbers parsed (RunFileError naming the line if one
  cannot be)."""
  path = os.path.join(workdir, PREDICTIONS_CSV)
  rows = []
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    try:
      for r in reader:
        rows.append(
          dict(
            r,
            **({"rat_id": int(r["rat_id"])} if "rat_id" in r else {}),
            pain=int(r["pain"]),
            pred=int(r["pred"]),
            p_pain=float(r["p_pain"]),
          )
        )
    except KeyError as e:
      raise RunFileError(f"{path}: no column {e.args[0]!r}; {_DAMAGED}") from None
    except (ValueError, TypeError) as e:  # a cut line: None / '' where a number belongs
      raise RunFileError(f"{path}, line {reader.line_num}: {e}; {_DAMAGED}") from None
  return rows


def read_attention(workdir: str):
  """attention.npz: `filename` (N,) and `beta` (N x K), aligned with predictions.csv."""
  return np.load(attention_path(workdir))


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path` to write to, and renames it over `path` when the
  block ends: `path` is never half-written, and keeps what it held if the block raises (the
  temporary file is then removed). The temporary name is hidden, holds the process id and ends
  in `path`'s extension (writers that pick the format by the name still do):
  `<dir>/.<name>.tmp<pid><ext>`."""
  folder, name = os.path.split(os.path.abspath(path))
  tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}{os.path.splitext(name)[1]}")
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename (`replacing`)."""
  with replacing(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write(text)


def write_json(path: str, data) -> None:
  write_atomic(path, json.dumps(data, indent=2) + "\n")


def write_results(workdir: str, results: dict, markdown: str, rows: list[dict]) -> None:
  """results.md, predictions.csv, (rows with `beta`) attention.npz, and last results.json, whose
  presence marks the run finished (`is_finished`): a run stopped in between is not finished."""
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
    with replacing(attention_path(workdir)) as tmp:
      np.savez(
        tmp,
        filename=np.array([r["filename"] for r in rows]),
        beta=np.stack([r["beta"] for r in rows]),
      )
  write_json(results_path(workdir), results)


def _comparable(config_dict: dict) -> dict:
  return {
    k: (
      {n: x for n, x in v.items() if n not in _IGNORED_SUBFIELDS[k]}
      if k in _IGNORED_SUBFIELDS and isinstance(v, dict)
      else v
    )
    for k, v in config_dict.items()
    if k not in _IGNORED_FIELDS
  }


def config_differences(config, workdir: str) -> list[str] | None:
  """The top-level config fields in which `workdir`'s config.json differs from `config` ([] if
  none), or None if it has no config.json."""
  if not os.path.exists(config_path(workdir)):
    return None
  return _dict_differences(json.loads(config.to_json_best_effort()), read_config(workdir))


def _dict_differences(current: dict, saved: dict) -> list[str]:
  """`config_differences` of two config.json contents (`saved` gets the added defaults)."""
  for key, value in _ADDED_DEFAULTS.items():  # fields added later: absent means the default
    *parents, name = key.split(".")
    cur, old = current, saved
    for p in parents:
      cur, old = cur.get(p), old.get(p)
      if not isinstance(cur, dict) or not isinstance(old, dict):
        break
    else:
      if name in cur or name in old:
        cur.setdefault(name, value)
        old.setdefault(name, value)
  saved, current = _comparable(saved), _comparable(current)
  return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


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


def check_data(workdir: str, data: dict, built_here: bool = False) -> str | None:
  """A work directory belongs to one data set (`input_pipeline.training_data`): refuses
  (ValueError) the data when its labels (or, unless `built_here`, its images) differ from
  `<workdir>/data.json`'s, else writes data.json (creating the directory) when absent. A
  data set generated on each machine (`built_here`: the synthetic twin, whose JPEG bytes
  depend on the CPU and library versions) whose labels match but whose image bytes do not
  returns a warning instead. A work directory from before data.json existed is taken to hold
  the current data."""
  path = os.path.join(workdir, DATA_JSON)
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except FileNotFoundError:
    os.makedirs(workdir, exist_ok=True)
    write_json(path, data)
    return None
  except (OSError, ValueError) as e:
    raise RunFileError(
      f"{path}: cannot be read ({e}); it says which images {workdir} was trained on: restore "
      "it, or use a new --workdir"
    ) from None

  def brief(d):
    return f"{d.get('images')} images, labels sha256 {str(d.get('labels_sha256'))[:12]}"

  other_labels = saved.get("labels_sha256") != data["labels_sha256"]
  other_images = saved.get("images_sha256") != data["images_sha256"]
  if other_labels or (other_images and not built_here):
    what = "labels" if other_labels else "images"
    raise ValueError(
      f"{workdir} was trained on other data than the current build ({brief(saved)} in "
      f"{DATA_JSON}; now {brief(data)}): its {what} changed since. Its results and "
      "checkpoints are not reused: give a new --workdir to train on the current data (or "
      f"delete {workdir} to replace it), or restore the data it was trained on"
    )
  if other_images:
    return (
      f"{workdir}: the images here have the labels {workdir} was trained on but other bytes "
      "(the data set was generated on another machine or with other library versions; "
      'docs/results.md, "Same seed, other machine"); continuing with them'
    )
  return None


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


_RESUME_ADVICE = (
  "wait for it to finish (then rerun this command to resume) or use another --workdir"
)


@contextlib.contextmanager
def claimed(workdir: str, what: str, advice: str = _RESUME_ADVICE):
  """`claim` without waiting: holds `<workdir>/run.lock`, or raises ValueError naming the
  process that does (`lock_holder`): "<workdir> is in use by another <what> (...); <advice>"."""
  with claim(workdir, wait=False) as mine:
    if not mine:
      raise ValueError(
        f"{workdir} is in use by another {what} ({lock_holder(workdir) or 'unknown process'}); "
        f"{advice}"
      )
    yield


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


def experiment_runs(workdir: str) -> list[str]:
  """The run directories that exist in an experiment work directory, relative to it
  (`runs/<name>/seed<k>`, `run_dir`), sorted."""
  root = os.path.join(workdir, "runs")
  if not os.path.isdir(root):
    return []
  return [
    os.path.join("runs", name, seed)
    for name in sorted(os.listdir(root))
    if os.path.isdir(os.path.join(root, name))
    for seed in sorted(os.listdir(os.path.join(root, name)))
    if seed.startswith("seed") and os.path.isdir(os.path.join(root, name, seed))
  ]


def run_record_files(workdir: str) -> list[str]:
  """What the reports read of a finished run, relative to `workdir`: config.json, data.json,
  results.md, predictions.csv, attention.npz (PainSeeker), each fold's metrics.jsonl, and
  results.json last (it marks the run finished). Not the checkpoints or TensorBoard files."""
  files = [
    n
    for n in (CONFIG_JSON, DATA_JSON, RESULTS_MD, PREDICTIONS_CSV, ATTENTION_NPZ)
    if os.path.exists(os.path.join(workdir, n))
  ]
  files += [
    os.path.join(d, METRICS_JSONL)
    for d in sorted(os.listdir(workdir))
    if (d.startswith("fold_") or d == "final")
    and os.path.exists(os.path.join(workdir, d, METRICS_JSONL))
  ]
  return files + [RESULTS_JSON]


# What two runs of one table must share, by the provenance key of results.json: the test
# images (`loro.data_fingerprint`) and the pretrained trunk (`pretrained.fingerprint`).
_SHARED = {
  "data": ("scored other test images than", "a data set built elsewhere; train on one copy of it"),
  "pretrained": (
    "was fine-tuned from another trunk file than",
    "a trunk built elsewhere; fine-tune every run from one copy of the file",
  ),
}


def _sha256(workdir: str, key: str) -> str | None:
  """The `key` fingerprint (`_SHARED`) of a finished run, if it has one."""
  return ((read_results(workdir).get("provenance") or {}).get(key) or {}).get("sha256")


def fingerprint_warnings(run_dirs) -> list[str]:
  """One line per `_SHARED` fingerprint that differs among the finished runs `run_dirs`
  (runs on another data build, or fine-tuned from another trunk, in one table); [] when each
  is the same for all (or unrecorded)."""
  out = []
  for key, (_, why) in _SHARED.items():
    by_sha: dict[str, list[str]] = {}
    for d in run_dirs:
      if sha := _sha256(d, key):
        by_sha.setdefault(sha, []).append(d)
    if len(by_sha) > 1:
      groups = "; ".join(
        f"{sha[:12]}: {len(ds)} run(s), e.g. {ds[0]}" for sha, ds in sorted(by_sha.items())
      )
      out.append(f"the runs have {len(by_sha)} {key} fingerprints ({groups}): {why}")
  return out


def _copy_atomic(src: str, dst: str) -> None:
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  with replacing(dst) as tmp:
    shutil.copyfile(src, tmp)


def _merge_one(src_run: str, dest_run: str, rel: str, shared: dict, report: dict) -> None:
  """One finished run of `merge_runs` into a work directory (see there)."""
  if is_finished(dest_run):  # whatever the source scored: the finished run here stays
    report["kept"].append(rel)
    return
  for key, (what, why) in _SHARED.items():
    sha = _sha256(src_run, key)
    if sha and shared[key] and sha not in shared[key]:
      have = ", ".join(sorted(x[:12] for x in shared[key]))
      report["skipped"].append(
        f"{rel}: it {what} the finished runs already there ({key} sha256 {sha[:12]} vs {have}): "
        f"{why}"
      )
      return
  started = os.path.isdir(dest_run)
  if started and os.path.exists(config_path(dest_run)):
    diff = _dict_differences(read_config(src_run), read_config(dest_run))
    if diff:
      report["skipped"].append(
        f"{rel}: the run started there has another configuration (differs in: {', '.join(diff)})"
      )
      return
  with claim(dest_run, wait=False) as mine:
    if not mine:
      report["skipped"].append(f"{rel}: in use by {lock_holder(dest_run) or 'another process'}")
      return
    if is_finished(dest_run):  # finished by its trainer since the first look
      report["kept"].append(rel)
      return
    for entry in os.listdir(dest_run):  # a started run's checkpoints: the finished run replaces it
      path = os.path.join(dest_run, entry)
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif entry != RUN_LOCK:
        os.remove(path)
    for f in run_record_files(src_run):  # results.json last
      _copy_atomic(os.path.join(src_run, f), os.path.join(dest_run, f))
  for key in _SHARED:  # the next runs must match this one too (an empty `dest` had none)
    if sha := _sha256(src_run, key):
      shared[key].add(sha)
  report["replaced" if started else "copied"].append(rel)


def _inside(name: str) -> bool:
  """Whether an archive member's path stays inside the folder it is extracted to."""
  parts = name.replace("\\", "/").split("/")
  return not os.path.isabs(name) and ".." not in parts


def merge_runs(src: str, dest: str) -> dict[str, list[str]]:
  """Copies the finished runs of experiment work directory `src` into `dest`: one Table 3 or
  sensitivity work directory filled on several machines (`painseeker merge-runs`).

  `src` is a work directory or an archive (.tar.gz, .tgz) written by this function. `dest` is a
  work directory or a new archive, which then holds the finished runs' record files
  (`run_record_files`: results, predictions, attention, configs, training curves; not the
  checkpoints). Into a work directory, per finished run of `src`:
    * `dest` has finished it too: left as it is ("kept");
    * `dest` has started it: replaced, its checkpoints removed ("replaced"), unless a process
      holds its lock or its configuration differs ("skipped", with the reason);
    * else copied ("copied").
  A run that scored other test images than `dest`'s finished runs (the data fingerprint of
  results.json: a data set built on another machine), or was fine-tuned from another trunk file
  (its `pretrained` fingerprint), is skipped. Files are written atomically and
  results.json last, so an interrupted merge leaves no run marked finished that is not complete.
  Returns {"copied", "replaced", "kept", "skipped"}: run paths relative to the work directories
  (skipped ones with their reason). Raises ValueError if `src` has no runs or `dest` is an
  existing archive.
  """
  is_archive = lambda p: p.endswith((".tar.gz", ".tgz"))
  name = src
  with tempfile.TemporaryDirectory() as tmp:
    if is_archive(src):
      with tarfile.open(src, "r:gz") as tar:
        bad = [m.name for m in tar if not (m.isfile() or m.isdir()) or not _inside(m.name)]
        if bad:
          raise ValueError(f"{src}: not an archive of merge-runs (holds {bad[0]})")
        # `filter` (Python >= 3.10.12) also refuses what the check above refuses.
        tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
      src = tmp
    runs = [r for r in experiment_runs(src) if is_finished(os.path.join(src, r))]
    if not runs:
      raise ValueError(
        f"{name} holds no finished runs (runs/<method>/seed<k>/results.json); give an experiment "
        "work directory (Table 3, sensitivity) or an archive written by merge-runs"
      )
    if is_archive(dest):
      if os.path.exists(dest):
        raise ValueError(f"{dest} already exists; give the archive a new name")
      with replacing(dest) as part, tarfile.open(part, "w:gz") as tar:
        for r in runs:
          for f in run_record_files(os.path.join(src, r)):
            tar.add(os.path.join(src, r, f), arcname=os.path.join(r, f))
      return {"copied": runs, "replaced": [], "kept": [], "skipped": []}
    report: dict[str, list[str]] = {"copied": [], "replaced": [], "kept": [], "skipped": []}
    finished = [d for r in experiment_runs(dest) if is_finished(d := os.path.join(dest, r))]
    shared = {key: {x for x in (_sha256(d, key) for d in finished) if x} for key in _SHARED}
    for r in runs:
      _merge_one(os.path.join(src, r), os.path.join(dest, r), r, shared, report)
    return report
