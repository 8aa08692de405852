"""Runs and reports the leave-one-rat-out (LORO) experiment of one method.

* `run_loro(config, workdir)`: builds the trainer once, trains every fold
  (`train.train_fold`, or side by side: `multi_run`), evaluates the fold
  models on their held-out rats (stacked over a leading fold axis,
  `config.eval.fold_strategy`) and writes the results files (`layout`).
* `write_outputs`: the paper's scores from the test rows: per rat and
  pooled ("LORO": confusion matrices summed over the folds, not a mean of
  per-rat scores); shared with the LBP + SVM baseline.

The same runner does leave-one-animal-out (LOAO) on a lab's grimace set
(`config.dataset = "grimace"`): the held-out groups are the animals of the
data (`input_pipeline.Groups`), the results `per_animal` and `loao`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from painseeker_jax import inference, input_pipeline, layout, multi_run, pretrained, sharding, train
from painseeker_jax import metrics as metrics_lib

log = logging.getLogger("painseeker")

FOLD_STRATEGIES = ("auto", "map", "vmap")


def check_folds(config) -> None:
  """`config.folds`: held-out rats among 1..6 (a lab's set: animal ids, checked against the
  data by `input_pipeline.Groups.held_out`), each once."""
  repeated = sorted({str(f) for f in config.folds if list(config.folds).count(f) > 1})
  if repeated:
    raise ValueError(
      f"config.folds={tuple(config.folds)} names {', '.join(repeated)} more than once; each "
      "held-out group is one fold, and a repeat would count its images twice"
    )
  if config.dataset == input_pipeline.GRIMACE:
    if config.folds and not all(isinstance(f, (str, int)) for f in config.folds):
      raise ValueError(f"config.folds={tuple(config.folds)}; give animal ids, e.g. R01,R03")
    return
  if not config.folds or any(r not in range(1, input_pipeline.NUM_RATS + 1) for r in config.folds):
    raise ValueError(f"config.folds={tuple(config.folds)}; held-out rats are 1..6")


def validate_config(config, num_devices: int) -> None:
  """The LORO fields (the training fields: `train.make_trainer`); raises ValueError."""
  check_folds(config)
  input_pipeline.check_dataset(config)
  train.check_field(
    config, "eval_batch_size", lambda x: train.is_int(x) and x >= 1, "an integer >= 1"
  )
  if config.eval.fold_strategy not in FOLD_STRATEGIES:
    raise ValueError(
      f"config.eval.fold_strategy={config.eval.fold_strategy!r}; use auto, map or vmap"
    )
  train.check_field(config, "scale", lambda x: x in inference.SCALES, "rgs or mgs")
  grimace = config.dataset == input_pipeline.GRIMACE
  if inference.au_names(config) and config.scale != "rgs" and not grimace:
    raise ValueError(
      f"config.scale={config.scale!r}: the ratspain data sets hold Rat Grimace Scale AU scores "
      "(au_orbital, au_ear, au_nose, au_whisker); use --config.scale=rgs"
    )
  multi_run.resolve_multi_run(config.get("multi_run", "sequential"))
  sharding.check_divisible(config.eval_batch_size, num_devices, "config.eval_batch_size")


def make_fold_eval(model, strategy: str, mesh=None):
  """jit fn(variables_F, images_FxBxHxWx3) -> (p_pain_FxB, beta_FxBxK or None, au_probs_FxBxAx3
  or None).

  `vmap` batches the fold axis (on CPU XLA turns it into grouped convolutions,
  much slower: benchmarks/eval_strategy.py); `map` runs the folds one after
  another inside one program.
  Data parallel over `mesh` (default: all devices): B is sharded along `data`,
  the fold axis and the variables are whole on every device, the outputs
  replicated.
  """
  if strategy == "auto":
    strategy = "map" if jax.default_backend() == "cpu" else "vmap"
  mesh = sharding.make_mesh() if mesh is None else mesh
  fold_data, repl = sharding.fold_batch_sharding(mesh), sharding.replicated(mesh)
  one = functools.partial(inference.outputs, model)
  jit = functools.partial(jax.jit, in_shardings=(repl, fold_data), out_shardings=repl)
  if strategy == "vmap":
    return jit(jax.vmap(one))
  if strategy == "map":
    return jit(lambda v, x: jax.lax.map(lambda a: one(*a), (v, x)))
  raise ValueError(f"config.eval.fold_strategy={strategy!r}; use auto, map or vmap")


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def au_columns(names, au_scores, au_probs) -> dict:
  """The AU columns of a prediction row: per AU `<name>` the expected score (0..2, from the
  head's softmax), `<name>_pred` the most probable level and `<name>_label` the raters' score
  (-1 unknown); and `grimace_score`, the mean expected score over the AUs (the RGS/MGS
  convention)."""
  probs = np.asarray(au_probs, np.float64)
  expected = probs @ np.arange(3.0)
  out = {}
  for a, name in enumerate(names):
    out[name] = float(expected[a])
    out[f"{name}_pred"] = int(np.argmax(probs[a]))
    out[f"{name}_label"] = int(au_scores[a])
  out["grimace_score"] = float(expected.mean())
  return out


def prediction_row(record, p_pain: float, pred: int, held_out, beta=None, au=None) -> dict:
  """One row of predictions.csv (plus the held-out rat or animal and the attention, if any;
  `au`: the AU columns, `au_columns`). A lab's grimace set has `animal_id`, `session` and
  `condition` where RatsPain has `rat_id`."""
  if "rat_id" in record:
    group = {"rat_id": int(record["rat_id"])}
  else:
    group = {k: _text(record[k]) for k in ("animal_id", "session", "condition")}
  return {
    "filename": _text(record["filename"]),
    **group,
    "pain_level": int(record["pain_level"]),
    "pain": int(record["pain"]),
    "p_pain": p_pain,
    "pred": pred,
    "held_out": held_out,
    "beta": beta,
    **(au or {}),
    # not a CSV column: for `data_fingerprint`
    **(
      {"image_sha256": hashlib.sha256(bytes(record["image"])).hexdigest()}
      if "image" in record
      else {}
    ),
  }


def data_fingerprint(rows: list[dict]) -> dict:
  """What a run was tested on, so that two results.json can tell whether they scored the same
  images: the number of test images and a SHA-256 over their (filename, pain level, SHA-256 of
  the stored image bytes), sorted by filename. The synthetic twin is built on the user's machine
  and its JPEG bytes can differ between machines and library versions (docs/results.md, "Table 3
  with the fitted recipe"); this says whether they did."""
  if not rows or any("image_sha256" not in r for r in rows):
    return {"test_images": len(rows)}
  h = hashlib.sha256()
  for r in sorted(rows, key=lambda r: r["filename"]):
    h.update(f"{r['filename']}\t{r['pain_level']}\t{r['image_sha256']}\n".encode())
  return {"test_images": len(rows), "sha256": h.hexdigest()}


def evaluate_folds(
  trainer: train.Trainer, variables_by_fold: dict, test_sources: dict
) -> list[dict]:
  """Predicts every held-out group with its fold's model, the folds stacked on a leading axis.

  Returns one row per labelled test image (all of them, exactly once). The
  batch axis is sharded over the trainer's mesh, the fold axis is not.
  """
  config, mesh = trainer.config, trainer.mesh
  au_names = inference.au_names(config)
  folds = list(variables_by_fold)
  fold_eval = make_fold_eval(trainer.model, config.eval.fold_strategy, mesh)
  variables_F = sharding.replicate(
    inference.stack_variables([variables_by_fold[k] for k in folds]), mesh
  )
  batches = {
    k: list(
      input_pipeline.eval_batches(
        test_sources[k],
        batch_size=config.eval_batch_size,
        image_size=config.image_size,
        num_threads=config.input.num_threads,
      )
    )
    for k in folds
  }
  num_batches = max(len(v) for v in batches.values())
  empty = None
  rows = []
  for b in range(num_batches):
    batch_by_fold = []
    for k in folds:
      if b < len(batches[k]):
        batch_by_fold.append(batches[k][b])
      else:  # this group has fewer batches: an all-padding batch
        empty = empty or {n: np.zeros_like(a) for n, a in batches[folds[0]][0].items()}
        batch_by_fold.append(empty)
    images = sharding.shard_fold_batch(np.stack([x["image"] for x in batch_by_fold]), mesh)
    p_pain, beta, au_probs = jax.device_get(fold_eval(variables_F, images))
    for f, k in enumerate(folds):
      x = batch_by_fold[f]
      for i in np.flatnonzero(x["mask"]):
        p = float(p_pain[f, i])
        record = test_sources[k][int(x["index"][i])]
        au = None
        if au_probs is not None:
          au = au_columns(au_names, record["au_scores"], au_probs[f, i])
        rows.append(
          prediction_row(
            record,
            p,
            int(p > 0.5),
            k,
            None if beta is None else np.asarray(beta[f, i], np.float32),
            au,
          )
        )
  return rows


def method_title(config) -> str:
  """The method's name as in the paper's Table 3."""
  name = config.model.name
  if name == "lbp_svm":
    return f"LBP (R={config.lbp.radius}, {config.lbp.grid}x{config.lbp.grid}) + SVM"
  if name == "resnet18":
    return "ResNet-18"
  title = "PainSeeker w/o PRSC" if config.loss.lambda_prsc == 0 else "PainSeeker"
  return title + (" + AU heads" if inference.au_names(config) else "")


def results_markdown(results: dict, title: str, groups=input_pipeline.RATSPAIN_GROUPS) -> str:
  """The paper's Table 3 layout for one method: per-rat (per-animal) F1/Acc cells and the LORO
  (LOAO) column."""
  per_group, pooled = results[groups.per_group], groups.pooled.upper()
  names = list(per_group)
  head = "| Method | " + " | ".join(_group_titles(names, groups)) + f" | {pooled} |"
  sep = "|---" * (len(names) + 2) + "|"

  def undefined(m):  # no pain in the labels and none predicted: F1 is 0/0
    return 2 * m["tp"] + m["fp"] + m["fn"] == 0

  def cell(m):
    return f"{'—' if undefined(m) else format(m['f1'], '.4f')}/{m['accuracy']:.2f}"

  cells = " | ".join(cell(per_group[r]) for r in names)
  row = f"| {title} | {cells} | {cell(results[groups.pooled])} |"
  note = f"Cells: F1/Accuracy (%). {pooled}: confusion matrices summed over folds."
  if any(undefined(m) for m in per_group.values()):
    note += (
      f" —: no F1 for {'an' if groups.unit[0] in 'aeiou' else 'a'} {groups.unit} with no pain "
      "image that the model also called no pain "
      "(0/0; results.json stores 0.0 there, as sklearn's zero_division=0)."
    )
  return "\n".join([head, sep, row, "", note, "", *_au_markdown(results, groups)])


def _group_titles(names: list, groups) -> list[str]:
  """Table column titles of the groups: `Rat3`, or the animal ids as in labels.csv (a `|`
  escaped)."""
  if groups.unit == "rat":
    return [r.replace("rat", "Rat") for r in names]
  return [a.replace("|", "\\|") for a in names]


def _au_markdown(results: dict, groups) -> list[str]:
  """The AU heads' scores, one row per action unit: pooled over the folds, and each group's
  accuracy (empty without AU heads)."""
  pooled = results[groups.pooled].get("au")
  if not pooled:
    return []
  per_group = results[groups.per_group]
  names = [n for n in pooled if n != "grimace_score"]
  titles = _group_titles(list(per_group), groups)
  lines = [
    f"Action units ({groups.pooled.upper()}: pooled over the folds; the images whose AU was "
    "scored): accuracy (%) of the predicted level, macro-F1, QWK (quadratic-weighted kappa) "
    "and MAE (|expected score − the raters' score|, levels 0-2); then each "
    f"{groups.unit}'s accuracy (%).",
    "",
    "| AU | n | accuracy | macro-F1 | QWK | MAE | " + " | ".join(titles) + " |",
    "|---" * (6 + len(titles)) + "|",
  ]
  for n in names:
    a = pooled[n]
    if not a["n"]:
      lines.append(f"| {n} | 0 | — | — | — | — | " + " | ".join("—" for _ in titles) + " |")
      continue
    cells = [
      f"{g['au'][n]['accuracy']:.1f}" if g.get("au", {}).get(n, {}).get("n") else "—"
      for g in per_group.values()
    ]
    lines.append(
      f"| {n} | {a['n']} | {a['accuracy']:.1f} | {a['macro_f1']:.3f} | {a['qwk']:.3f} | "
      f"{a['mae']:.3f} | " + " | ".join(cells) + " |"
    )
  g = pooled.get("grimace_score")
  if g and g.get("n"):
    lines.append(
      f"| grimace score | {g['n']} | — | — | — | {g['mae']:.3f} | "
      + " | ".join("—" for _ in titles)
      + " |"
    )
  return lines + [""]


def write_outputs(
  config,
  workdir: str,
  rows: list[dict],
  provenance_info: dict,
  groups: input_pipeline.Groups = input_pipeline.RATSPAIN_GROUPS,
) -> dict:
  """Scores the test rows per group (rat or animal, `groups`) and pooled, writes the results
  files, returns the results.

  `provenance_info` (versions, devices, commit, wall times) is stored under `provenance`, with
  the test images' `data_fingerprint`."""
  group_of = [groups.names[r["held_out"]] for r in rows]
  m = metrics_lib.loro_metrics([r["pain"] for r in rows], [r["pred"] for r in rows], group_of)
  per_group = {k: m["per_group"][k] for k in groups.names.values() if k in m["per_group"]}
  names = inference.au_names(config)
  if names and rows and names[0] in rows[0]:  # AU heads: per-AU scores beside the pain scores
    for k in per_group:
      per_group[k]["au"] = au_block(names, [r for r, g in zip(rows, group_of) if g == k])
    m["pooled"]["au"] = au_block(names, rows)
  results = {
    "config": json.loads(config.to_json_best_effort()),
    groups.per_group: per_group,
    groups.pooled: m["pooled"],
    "provenance": dict(provenance_info, data=data_fingerprint(rows)),
  }
  if groups.unit != "rat":  # the fold directories of the run (`layout.fold_dir`), for loading
    results["fold_splits"] = list(dict.fromkeys(r["held_out"] for r in rows))
  markdown = results_markdown(results, method_title(config), groups)
  layout.write_results(workdir, results, markdown, rows)
  return results


def au_block(names, rows: list[dict]) -> dict:
  """Per-AU accuracy, macro-F1, QWK and MAE, and the grimace-score MAE, of prediction rows."""
  expected = np.array([[r[n] for n in names] for r in rows], np.float64).reshape(-1, len(names))
  labels = np.array([[r[f"{n}_label"] for n in names] for r in rows]).reshape(-1, len(names))
  pred = np.array([[r[f"{n}_pred"] for n in names] for r in rows]).reshape(-1, len(names))
  return metrics_lib.au_metrics(labels, pred, expected, names)


def provenance(mesh=None) -> dict:
  """What a reader needs to trust a number: package versions (Pillow decodes the JPEGs), the
  CPU and devices, the git commit, and JAX's float32 matmul/conv precision (None: the platform's
  default, which on recent NVIDIA GPUs is TensorFloat-32 and on the CPU full float32; set it with
  JAX_DEFAULT_MATMUL_PRECISION, e.g. `highest`)."""
  from importlib import metadata  # noqa: PLC0415

  versions = {}
  names = (
    "painseeker-jax",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "pillow",
  )
  for name in names:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  out = {"versions": versions, "git_commit": _git_commit(), "backend": jax.default_backend()}
  out["matmul_precision"] = jax.config.jax_default_matmul_precision
  out["cpu"] = _cpu()
  if mesh is not None:
    devices = mesh.devices.flatten()
    out["devices"] = {"kind": devices[0].device_kind, "count": int(devices.size)}
  return out


def _cpu() -> dict:
  """The host CPU's model name and widest vector extension: oneDNN's CPU kernels are chosen by
  it, so the same seed trains another model on another CPU (README, quick start)."""
  import platform  # noqa: PLC0415

  name, flags = "", set()
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
          name = value.strip()
        elif key in ("flags", "Features") and not flags:
          flags = set(value.split())
        if name and flags:
          break
  except OSError:
    pass
  isa = next((x for x in ("avx512f", "avx2", "avx", "sve", "asimd") if x in flags), None)
  return {"model": name or platform.processor() or platform.machine(), "vector_isa": isa}


def _git_commit() -> str | None:
  """The commit of the checkout this package runs from (`+dirty` with local changes), if any."""
  import subprocess  # noqa: PLC0415

  here = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(
      ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no"],
      cwd=here,
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "")


def check_training_data(config, workdir: str, source=None) -> None:
  """`layout.check_data` of `config`'s labelled images (`input_pipeline.training_data`): refuses
  a work directory trained on other labels or images; logs a machine-built twin's other
  bytes."""
  warning = layout.check_data(
    workdir, input_pipeline.training_data(config, source), input_pipeline.built_here(config)
  )
  if warning:
    log.warning("%s", warning)


def run_loro(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The leave-one-rat-out experiment (leave-one-animal-out on a lab's grimace set); returns
  (and writes) the results.

  Everything that can be checked before training is checked before anything is written to
  `workdir`: the config fields, the data (built on first use), the held-out animals, the batch
  against every fold's training set, and the work directory's lock and configuration.
  """
  t_run = time.time()
  trainer = train.make_trainer(config)  # checks the training fields; compiles nothing yet
  validate_config(config, trainer.mesh.size)
  groups = input_pipeline.get_groups(config)  # a lab's set: built on first use
  folds = groups.held_out(config.folds)
  everything = groups.fold_splits(0)[0]  # every labelled image: what `check_training_data` reads
  splits = [s for k in folds for s in groups.fold_splits(k)] + [everything]
  sources = input_pipeline.get_sources(
    config.dataset, splits, config.data_dir, config.manual_dir, config.scale
  )
  pretrained.resolve_pretrained(config.model.pretrained)  # stops with instructions if missing
  train_sources = {k: sources[groups.fold_splits(k)[0]] for k in folds}
  train_indices = {k: input_pipeline.labelled_indices(train_sources[k]) for k in folds}
  for k in folds:
    train.check_batch_fits(config, len(train_indices[k]), f"fold {layout.fold_label(k)}")
  with layout.claimed(workdir, "run"):
    layout.check_config(config, workdir)
    check_training_data(config, workdir, sources[everything])
    log.info("%s", sharding.describe(trainer.mesh, config.batch_size))
    seconds = {}
    if multi_run.resolve_multi_run(config.get("multi_run", "sequential")) == "vmap":
      t0 = time.time()
      variables = multi_run.train_folds_stacked(
        trainer, workdir, folds, train_sources, train_indices
      )
      seconds["folds_side_by_side"] = time.time() - t0
    else:
      variables = {}
      desc = f"{groups.pooled.upper()} folds"
      for k in tqdm(folds, desc=desc, unit="fold", position=0, disable=not config.progress):
        t0 = time.time()
        variables[k] = train.train_fold(trainer, workdir, k, train_sources[k], train_indices[k])
        seconds[layout.fold_label(k)] = time.time() - t0
    rows = evaluate_folds(trainer, variables, {k: sources[groups.splits[k]] for k in folds})
    seconds["total"] = time.time() - t_run
    info = dict(provenance(trainer.mesh), wall_seconds={k: round(v, 1) for k, v in seconds.items()})
    info["pretrained"] = pretrained.fingerprint(config.model.pretrained)
    results = write_outputs(config, workdir, rows, info, groups)
  log.info(
    "%s: F1 %.4f, accuracy %.2f%% (%d test images)",
    groups.pooled.upper(),
    results[groups.pooled]["f1"],
    results[groups.pooled]["accuracy"],
    len(rows),
  )
  return results
