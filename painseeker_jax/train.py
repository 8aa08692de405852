"""Training and leave-one-rat-out evaluation of PainSeeker / ResNet-18.

One flat trainer:
  * `train_step` is pure (state, batch, rng) -> (state, metrics), jit-compiled
    with the state donated; randomness only from explicit keys folded with the
    step.
  * `train_fold` trains one held-out-rat fold, checkpointing with orbax
    every `config.checkpoint_every_epochs` epochs to `<workdir>/fold_rat<k>/`;
    a rerun resumes from the latest checkpoint (mid-fold included) and a
    finished fold is never retrained.
  * `run_loro` trains every fold, evaluates the fold models on their held-out
    rats (stacked over a leading fold axis, `config.eval.fold_strategy`), and
    writes results.json, results.md and predictions.csv.
  * Data parallel on every device (`painseeker_jax.sharding`): the batch is
    sharded along the mesh axis `data`, parameters and optimizer state are
    replicated, BatchNorm statistics are those of the global batch. One device
    is a mesh of one.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from tqdm.auto import tqdm

from painseeker_jax import input_pipeline
from painseeker_jax import losses
from painseeker_jax import metrics as metrics_lib
from painseeker_jax import models
from painseeker_jax import pretrained
from painseeker_jax import sharding
from painseeker_jax import writers

NUM_CLASSES = 2
log = logging.getLogger("painseeker")


class TrainState(train_state.TrainState):
  batch_stats: Any


class NonFiniteError(FloatingPointError):
  """Loss or gradients became NaN/inf."""


def make_optimizer(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`adam_l2`: PyTorch's Adam(weight_decay=wd), i.e. wd * param added to the
  gradient before the Adam moments (the paper's setting). `adamw`: decoupled
  weight decay (Loshchilov & Hutter). Both decay every parameter, as PyTorch
  does by default."""
  if opt.name == "adam_l2":
    return optax.chain(optax.add_decayed_weights(opt.weight_decay),
                       optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps))
  if opt.name == "adamw":
    return optax.adamw(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                       weight_decay=opt.weight_decay)
  raise ValueError(f"config.optimizer.name={opt.name!r}; use adam_l2 or adamw")


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
MULTI_RUN = ("auto", "sequential", "vmap")
# config.multi_run="auto": what benchmarks/multi_run.py measured faster on each backend
# (benchmarks/README.md, "Multi-run"). Vmapped convolutions run 1.8-3.2x slower on CPU.
_MULTI_RUN_AUTO = {"cpu": "sequential"}


def resolve_multi_run(name: str) -> str:
  """`sequential` or `vmap`: how the folds of a run are trained (`auto` by backend)."""
  if name not in MULTI_RUN:
    raise ValueError(f"config.multi_run={name!r}; use auto, sequential or vmap")
  if name == "auto":
    return _MULTI_RUN_AUTO.get(jax.default_backend(), "sequential")
  return name


def make_model(config: ml_collections.ConfigDict):
  """The config's network; `config.dtype` is the compute dtype (parameters stay float32)."""
  name = config.get("dtype", "float32")
  if name not in DTYPES:
    raise ValueError(f"config.dtype={name!r}; use float32 or bfloat16")
  conv = models.resolve_conv(config.model.get("conv", "auto"), DTYPES[name])
  return models.create_model(config.model.name, NUM_CLASSES, size=config.model.size, dtype=DTYPES[name],
                             conv=conv)


def num_regions(model, image_size: int) -> int | None:
  """K, the number of local regions PainSeeker attends over (None for ResNet)."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: models.forward(model, v, x, train=False), variables, x)
  return None if out[1] is None else out[1].shape[-1]


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails at config time (before any data is built) on inconsistent fields."""
  sharding.maybe_initialize_distributed()  # before the device count below; multi-host only
  model = make_model(config)
  make_optimizer(config.optimizer)
  if config.resize_size < config.image_size:
    raise ValueError(f"config.resize_size ({config.resize_size}) < config.image_size ({config.image_size})")
  if not config.folds or any(r not in range(1, input_pipeline.NUM_RATS + 1) for r in config.folds):
    raise ValueError(f"config.folds={tuple(config.folds)}; held-out rats are 1..6")
  if config.eval.fold_strategy not in ("auto", "map", "vmap"):
    raise ValueError(f"config.eval.fold_strategy={config.eval.fold_strategy!r}; use auto, map or vmap")
  if str(config.model.pretrained or "none").lower() != "none" and config.model.size != "full":
    raise ValueError("config.model.pretrained needs config.model.size='full' (the ResNet-18 trunk)")
  resolve_multi_run(config.get("multi_run", "sequential"))
  num_devices = jax.device_count()  # all hosts: the mesh of the data-parallel step
  sharding.check_divisible(config.batch_size, num_devices, "config.batch_size")
  sharding.check_divisible(config.eval_batch_size, num_devices, "config.eval_batch_size")
  k = num_regions(model, config.image_size)
  if k is not None:  # PRSC is computed (and logged) even with lambda 0
    losses.validate_prsc_args(config.loss.k_h, k, config.loss.delta)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model, loss_cfg) -> tuple[TrainState, dict]:
  """One optimisation step on `batch` (uint8 images, int labels). Pure.

  `rng` is unused by the current models (no dropout) but is part of the
  signature so that stochastic layers get their key folded in with the step.
  """
  images = input_pipeline.normalize(batch["image"])
  labels = batch["label"]

  def loss_fn(params):
    logits, beta, new_bs = models.forward(model, {"params": params, "batch_stats": state.batch_stats},
                                          images, train=True, rngs={"dropout": rng})
    loss, parts = losses.total_loss(logits, labels, beta, loss_cfg.lambda_prsc, loss_cfg.k_h,
                                    loss_cfg.delta)
    return loss, (parts, logits, new_bs)

  (loss, (parts, logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=new_bs)
  out = {"loss": loss, "ce": parts["ce"], "prsc": parts["prsc"],
         "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
         "grad_norm": optax.global_norm(grads)}
  return state, out


def _predict(model, variables, images):
  logits, beta, _ = models.forward(model, variables, input_pipeline.normalize(images), train=False)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, 1], beta


def make_fold_eval(model, strategy: str, mesh=None):
  """jit fn(variables_F, images_FxBxHxWx3) -> (p_pain_FxB, beta_FxBxK or None).

  `vmap` batches the fold axis (on CPU XLA turns it into grouped convolutions,
  6-7x slower); `map` runs the folds one after another inside one program.
  Data parallel over `mesh` (default: all devices): B is sharded along `data`,
  the fold axis and the variables are whole on every device, the outputs
  replicated.
  """
  if strategy == "auto":
    strategy = "map" if jax.default_backend() == "cpu" else "vmap"
  mesh = sharding.make_mesh() if mesh is None else mesh
  fold_data, repl = sharding.fold_batch_sharding(mesh), sharding.replicated(mesh)
  one = functools.partial(_predict, model)
  jit = functools.partial(jax.jit, in_shardings=(repl, fold_data), out_shardings=repl)
  if strategy == "vmap":
    return jit(jax.vmap(one))
  if strategy == "map":
    return jit(lambda v, x: jax.lax.map(lambda a: one(*a), (v, x)))
  raise ValueError(f"config.eval.fold_strategy={strategy!r}; use auto, map or vmap")


def stack_trees(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


# ---------------------------------------------------------------------------
# One fold.


def fold_dir(workdir: str, held_out: int) -> str:
  """`<workdir>/fold_rat<k>`; held_out 0 (train on all rats) -> `<workdir>/final`."""
  return os.path.join(workdir, f"fold_rat{held_out}" if held_out else "final")


def _checkpoint_manager(path: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(os.path.join(path, "checkpoints")),
                               options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))


@functools.lru_cache(maxsize=8)
def _compiled(model, loss_cfg_json: str, image_size: int, optimizer_json: str, mesh=None):
  """jit-compiled init and train step, shared by the folds of a run.

  Data parallel over `mesh` (default: all devices, `sharding.make_mesh()`): the
  step takes the batch sharded along `data` and the state replicated, and
  returns the state and metrics replicated.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  data, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  loss_cfg = ml_collections.ConfigDict(json.loads(loss_cfg_json))
  tx = make_optimizer(ml_collections.ConfigDict(json.loads(optimizer_json)))
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)

  @functools.partial(jax.jit, out_shardings=repl)
  def init(rng):
    variables = model.init(rng, x, train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             batch_stats=variables["batch_stats"], tx=tx)

  step = jax.jit(functools.partial(train_step, model=model, loss_cfg=loss_cfg), donate_argnums=0,
                 in_shardings=(repl, data, repl), out_shardings=(repl, repl))
  return init, step


@functools.lru_cache(maxsize=2)
def _load_resnet18(path: str):
  return pretrained.load_resnet18(path)


def _start_fold(config, workdir: str, held_out: int, train_indices, init_fn, mesh):
  """Fresh (or pretrained) state of one fold, or its latest checkpoint; checks the resume point.

  Returns (state, checkpoint manager, step key, steps per epoch).
  """
  steps_per_epoch = len(train_indices) // config.batch_size
  init_key, step_key = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), held_out))
  state = init_fn(init_key)
  weights = pretrained.resolve_pretrained(config.model.pretrained)
  if weights:  # ImageNet trunk; the heads keep their fresh initialisation
    v = pretrained.copy_trunk({"params": state.params, "batch_stats": state.batch_stats}, _load_resnet18(weights))
    state = sharding.replicate(state.replace(params=v["params"], batch_stats=v["batch_stats"]), mesh)
  mngr = _checkpoint_manager(fold_dir(workdir, held_out))
  latest = mngr.latest_step()
  total_steps = steps_per_epoch * config.num_epochs
  if latest is not None:
    state = sharding.replicate(mngr.restore(latest, args=ocp.args.StandardRestore(state)), mesh)
    log.info("fold rat%d: resumed from step %d of %d", held_out, latest, total_steps)
  start_step = int(state.step)
  if start_step % steps_per_epoch and start_step != total_steps:
    mngr.close()
    raise RuntimeError(f"{mngr.directory}: checkpoint at step {start_step} is not at an epoch "
                       f"boundary of {steps_per_epoch} steps; was config.batch_size changed? "
                       "Use a new --workdir.")
  return state, mngr, step_key, steps_per_epoch


def _epoch_batches(config, held_out: int, epoch: int, train_source, train_indices):
  return input_pipeline.train_batches(
      train_source, train_indices, batch_size=config.batch_size, image_size=config.image_size,
      resize_size=config.resize_size, seed=input_pipeline.epoch_seed(config.seed, held_out, epoch),
      num_threads=config.input.num_threads, num_workers=config.input.num_workers)


def _end_epoch(config, held_out: int, epoch: int, state, sums: dict, steps_per_epoch: int,
               seconds: float, writer, mngr, images: int | None = None) -> None:
  """Logs the epoch's mean metrics and saves the checkpoint when it is due.

  `images`: the images trained on in `seconds` (default: this fold's epoch; all
  folds' when they train side by side).
  """
  summary = {k: v / steps_per_epoch for k, v in sums.items()}
  summary["epoch_seconds"] = seconds
  summary["images_per_second"] = (images or steps_per_epoch * config.batch_size) / seconds
  writer.write_scalars(int(state.step), summary)
  log.info("fold rat%d epoch %d/%d: %s", held_out, epoch + 1, config.num_epochs,
           ", ".join(f"{k}={v:.4g}" for k, v in summary.items()))
  if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.num_epochs:
    mngr.save(int(state.step), args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()


def _variables(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def train_fold(config, workdir: str, held_out: int, train_source, train_indices,
               fold_bar_position: int = 1, mesh=None) -> dict:
  """Trains (or resumes, or just loads) the model of one fold; returns its variables.

  Data parallel over `mesh` (default: all devices of all hosts).
  """
  sharding.maybe_initialize_distributed()
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.check_divisible(config.batch_size, mesh.size, "config.batch_size")
  init_fn, step_fn = _compiled(make_model(config), config.loss.to_json(), config.image_size,
                               config.optimizer.to_json(), mesh)
  state, mngr, step_key, steps_per_epoch = _start_fold(config, workdir, held_out, train_indices, init_fn, mesh)
  total_steps = steps_per_epoch * config.num_epochs
  start_step = int(state.step)
  if start_step >= total_steps:
    mngr.close()
    return _variables(state)

  writer = writers.MetricWriter(os.path.join(fold_dir(workdir, held_out), "tb"))
  bar = tqdm(total=total_steps, initial=start_step, desc=f"fold rat{held_out}", unit="step",
             position=fold_bar_position, leave=False, disable=not config.progress, dynamic_ncols=True)
  try:
    for epoch in range(start_step // steps_per_epoch, config.num_epochs):
      t0 = time.time()
      bar.set_description(f"fold rat{held_out} epoch {epoch + 1}/{config.num_epochs}")
      sums, pending = {}, None
      for batch in _epoch_batches(config, held_out, epoch, train_source, train_indices):
        step = int(state.step)
        batch = sharding.shard_batch({"image": batch["image"], "label": batch["label"]}, mesh)
        state, out = step_fn(state, batch, jax.random.fold_in(step_key, step))
        if pending is not None:  # read the previous step's metrics while this one runs
          _accumulate(sums, pending, held_out, bar)
        pending = (step, out)
      _accumulate(sums, pending, held_out, bar)
      _end_epoch(config, held_out, epoch, state, sums, steps_per_epoch, time.time() - t0, writer, mngr)
  finally:
    bar.close()
    writer.close()
    mngr.close()
  return _variables(state)


# ---------------------------------------------------------------------------
# Several folds in one program (config.multi_run = "vmap").


@functools.lru_cache(maxsize=4)
def _compiled_stacked_step(model, loss_cfg_json: str, optimizer_json: str, mesh):
  """jit(vmap(train_step)) over runs stacked on a leading axis, with a per-run `active` flag.

  fn(state_R, batch_RxB, rng_R, active_R) -> (state_R, metrics_R). A run whose flag
  is False keeps its state unchanged (its batch is padding): folds with fewer
  steps per epoch, or already further along after a resume, wait for the others.
  The batch axis B is sharded along `data`, the run axis and the states are whole.
  """
  loss_cfg = ml_collections.ConfigDict(json.loads(loss_cfg_json))
  del optimizer_json  # part of the cache key: the states carry their optimizer

  def masked_step(state, batch, rng, active):
    new_state, out = train_step(state, batch, rng, model=model, loss_cfg=loss_cfg)
    keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    return jax.tree.map(keep, new_state, state), out

  repl = sharding.replicated(mesh)
  return jax.jit(jax.vmap(masked_step), donate_argnums=0,
                 in_shardings=(repl, sharding.fold_batch_sharding(mesh), repl, repl),
                 out_shardings=(repl, repl))


def train_folds_stacked(config, workdir: str, folds, train_sources: dict, train_indices: dict,
                        mesh=None) -> dict:
  """Trains the folds side by side in one vmapped program; returns {held_out: variables}.

  The same trainings as `train_fold` one after another (same initial states, batches
  and keys, per-fold checkpoints and logs; equal up to float summation order), with
  the folds stacked on a leading axis of every array.
  """
  sharding.maybe_initialize_distributed()
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.check_divisible(config.batch_size, mesh.size, "config.batch_size")
  model = make_model(config)
  init_fn, _ = _compiled(model, config.loss.to_json(), config.image_size, config.optimizer.to_json(), mesh)
  step_fn = _compiled_stacked_step(model, config.loss.to_json(), config.optimizer.to_json(), mesh)
  started = {}
  try:
    for k in folds:
      started[k] = _start_fold(config, workdir, k, train_indices[k], init_fn, mesh)
  except BaseException:
    for s in started.values():
      s[1].close()
    raise
  states = {k: s[0] for k, s in started.items()}
  steps = {k: s[3] for k, s in started.items()}
  start_epoch = {k: int(states[k].step) // steps[k] for k in folds}
  todo = [k for k in folds if start_epoch[k] < config.num_epochs]
  for k in folds:
    if k not in todo:
      started[k][1].close()
  if not todo:
    return {k: _variables(states[k]) for k in folds}

  log.info("training folds %s side by side (config.multi_run=vmap)", ", ".join(f"rat{k}" for k in todo))
  stacked = sharding.replicate(stack_trees([states[k] for k in todo]), mesh)
  keys = jnp.stack([started[k][2] for k in todo])
  writer = {k: writers.MetricWriter(os.path.join(fold_dir(workdir, k), "tb")) for k in todo}
  first = min(start_epoch[k] for k in todo)
  total = sum(max(steps[k] for k in todo if e >= start_epoch[k]) for e in range(first, config.num_epochs))
  bar = tqdm(total=total, desc="folds side by side", unit="step", position=1, leave=False,
             disable=not config.progress, dynamic_ncols=True)
  padding = None  # zeros shaped like a real batch, for runs that wait
  try:
    for epoch in range(first, config.num_epochs):
      t0 = time.time()
      bar.set_description(f"folds side by side, epoch {epoch + 1}/{config.num_epochs}")
      live = [k for k in todo if epoch >= start_epoch[k]]
      its = {k: iter(_epoch_batches(config, k, epoch, train_sources[k], train_indices[k])) for k in live}
      sums, pending = {k: {} for k in live}, None
      for i in range(max(steps[k] for k in live)):
        active = [k in its and i < steps[k] for k in todo]
        real = {k: next(its[k]) for k, a in zip(todo, active) if a}
        padding = padding or {n: np.zeros_like(next(iter(real.values()))[n]) for n in ("image", "label")}
        batch = [real.get(k, padding) for k in todo]
        step_R = [epoch * steps[k] + i for k in todo]  # = the fold's state.step where active
        rngs = jax.vmap(jax.random.fold_in)(keys, jnp.asarray(step_R, jnp.uint32))
        stacked_batch = sharding.shard_fold_batch(
            {n: np.stack([b[n] for b in batch]) for n in ("image", "label")}, mesh)
        stacked, out = step_fn(stacked, stacked_batch, rngs, jnp.asarray(active))
        if pending is not None:
          _accumulate_stacked(sums, pending, todo, bar)
        pending = (step_R, active, out)
      _accumulate_stacked(sums, pending, todo, bar)
      seconds = time.time() - t0
      images = sum(steps[k] for k in live) * config.batch_size
      for r, k in enumerate(todo):
        if k in live:
          state_k = jax.tree.map(lambda x, r=r: x[r], stacked)
          _end_epoch(config, k, epoch, state_k, sums[k], steps[k], seconds, writer[k], started[k][1], images)
  finally:
    bar.close()
    for k in todo:
      writer[k].close()
      started[k][1].close()
  for r, k in enumerate(todo):
    states[k] = jax.tree.map(lambda x, r=r: x[r], stacked)
  return {k: _variables(states[k]) for k in folds}


def _accumulate_stacked(sums: dict, pending, todo, bar) -> None:
  step_R, active, out = pending
  out = jax.device_get(out)
  for r, k in enumerate(todo):
    if active[r]:
      _check_finite(k, step_R[r], out["loss"][r], out["grad_norm"][r])
      for name, v in out.items():
        sums[k][name] = sums[k].get(name, 0.0) + float(v[r])
  bar.update(1)
  bar.set_postfix(loss=f"{float(np.mean(out['loss'][np.asarray(active)])):.4f}")


def _check_finite(held_out: int, step: int, loss, grad_norm) -> None:
  if not (np.isfinite(loss) and np.isfinite(grad_norm)):
    raise NonFiniteError(f"fold rat{held_out}, step {step}: non-finite loss ({loss}) or "
                         f"gradient norm ({grad_norm}); lower config.optimizer.learning_rate "
                         "or check the input images.")


def _accumulate(sums: dict, pending, held_out: int, bar) -> None:
  step, out = pending
  out = jax.device_get(out)
  _check_finite(held_out, step, out["loss"], out["grad_norm"])
  for k, v in out.items():
    sums[k] = sums.get(k, 0.0) + float(v)
  bar.update(1)
  bar.set_postfix(loss=f"{float(out['loss']):.4f}")


# ---------------------------------------------------------------------------
# Evaluation of all folds and the outputs of a run.


def evaluate_folds(config, variables_by_fold: dict, test_sources: dict, mesh=None) -> list[dict]:
  """Predicts every held-out rat with its fold's model, the folds stacked on a leading axis.

  Returns one row per test image (all of them, exactly once). The batch axis is
  sharded over `mesh` (default: all devices), the fold axis is not.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  sharding.check_divisible(config.eval_batch_size, mesh.size, "config.eval_batch_size")
  model = make_model(config)
  folds = list(variables_by_fold)
  fold_eval = make_fold_eval(model, config.eval.fold_strategy, mesh)
  variables_F = sharding.replicate(stack_trees([variables_by_fold[k] for k in folds]), mesh)
  iters = {k: list(input_pipeline.eval_batches(test_sources[k], batch_size=config.eval_batch_size,
                                                image_size=config.image_size,
                                                num_threads=config.input.num_threads))
           for k in folds}
  num_batches = max(len(v) for v in iters.values())
  empty = None
  rows = []
  for b in range(num_batches):
    batch_by_fold = []
    for k in folds:
      if b < len(iters[k]):
        batch_by_fold.append(iters[k][b])
      else:  # this rat has fewer batches: an all-padding batch
        empty = empty or {n: np.zeros_like(a) for n, a in iters[folds[0]][0].items()}
        batch_by_fold.append(empty)
    images = sharding.shard_fold_batch(np.stack([x["image"] for x in batch_by_fold]), mesh)
    p_pain, beta = jax.device_get(fold_eval(variables_F, images))
    for f, k in enumerate(folds):
      x = batch_by_fold[f]
      for i in np.flatnonzero(x["mask"]):
        rec = test_sources[k][int(x["index"][i])]
        p = float(p_pain[f, i])
        rows.append({"filename": _text(rec["filename"]), "rat_id": int(rec["rat_id"]),
                     "pain_level": int(rec["pain_level"]), "pain": int(rec["pain"]),
                     "p_pain": p, "pred": int(p > 0.5), "held_out": k,
                     "beta": None if beta is None else np.asarray(beta[f, i], np.float32)})
  return rows


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` via a temporary file and a rename (never half-written)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8", newline="") as f:
    f.write(text)
  os.replace(tmp, path)


def results_markdown(results: dict, title: str) -> str:
  """The paper's Table 3 layout for one method: per-rat F1/Acc cells and the LORO column."""
  rats = list(results["per_rat"])
  head = "| Method | " + " | ".join(r.replace("rat", "Rat") for r in rats) + " | LORO |"
  sep = "|---" * (len(rats) + 2) + "|"
  cell = lambda m: f"{m['f1']:.4f}/{m['accuracy']:.2f}"  # noqa: E731
  row = f"| {title} | " + " | ".join(cell(results["per_rat"][r]) for r in rats) + f" | {cell(results['loro'])} |"
  return "\n".join([head, sep, row, "", "Cells: F1/Accuracy (%). LORO: confusion matrices summed over folds.", ""])


def method_title(config) -> str:
  """The method's name as in the paper's Table 3."""
  name = config.model.name
  if name == "lbp_svm":
    return f"LBP (R={config.lbp.radius}, {config.lbp.grid}x{config.lbp.grid}) + SVM"
  if name == "resnet18":
    return "ResNet-18"
  return "PainSeeker w/o PRSC" if config.loss.lambda_prsc == 0 else "PainSeeker"


def write_outputs(config, workdir: str, rows: list[dict]) -> dict:
  m = metrics_lib.loro_metrics([r["pain"] for r in rows], [r["pred"] for r in rows],
                               [f"rat{r['held_out']}" for r in rows])
  per_rat = {k: m["per_group"][k] for k in sorted(m["per_group"], key=lambda s: int(s[3:]))}
  results = {"config": json.loads(config.to_json_best_effort()), "per_rat": per_rat, "loro": m["pooled"]}
  write_atomic(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")
  write_atomic(os.path.join(workdir, "results.md"), results_markdown(results, method_title(config)))
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=["filename", "rat_id", "pain_level", "pain", "p_pain", "pred"],
                     extrasaction="ignore", lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow(dict(r, p_pain=f"{r['p_pain']:.6f}"))
  write_atomic(os.path.join(workdir, "predictions.csv"), buf.getvalue())
  if rows and rows[0].get("beta") is not None:  # PainSeeker's attention, for the analyses
    tmp = os.path.join(workdir, f"attention.tmp{os.getpid()}.npz")
    np.savez(tmp, filename=np.array([r["filename"] for r in rows]),
             beta=np.stack([r["beta"] for r in rows]))
    os.replace(tmp, os.path.join(workdir, "attention.npz"))
  return results


# Config fields added after work directories were written; their absence means these values.
_ADDED_DEFAULTS = {"dtype": "float32"}


def _check_workdir_config(config, workdir: str) -> None:
  """A work directory belongs to one configuration: refuse to mix runs."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  # Fields that do not change results (multi_run and model.conv: up to float summation order;
  # checkpoint_every_epochs: resuming is exact whatever the interval).
  ignore = ("progress", "input", "multi_run", "checkpoint_every_epochs")
  strip = lambda d: {k: ({n: x for n, x in v.items() if n != "conv"} if k == "model" else v)  # noqa: E731
                     for k, v in d.items() if k not in ignore}
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    for key, value in _ADDED_DEFAULTS.items():  # fields added later: absent means the default
      if key in current:
        saved.setdefault(key, value)
    if strip(saved) != strip(current):
      diff = sorted(k for k in set(saved) | set(current)
                    if k not in ignore and saved.get(k) != current.get(k))
      raise ValueError(f"{workdir} holds a run with another configuration (differs in: "
                       f"{', '.join(diff)}); use a new --workdir or the same config.")
  os.makedirs(workdir, exist_ok=True)
  write_atomic(path, json.dumps(current, indent=2) + "\n")


def run_loro(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The leave-one-rat-out experiment; returns (and writes) the results."""
  sharding.maybe_initialize_distributed()  # before JAX touches a device; multi-host only
  validate_config(config)
  _check_workdir_config(config, workdir)
  folds = list(config.folds)
  splits = [s for k in folds for s in input_pipeline.fold_splits(k)]
  sources = input_pipeline.get_sources(config.dataset, splits, config.data_dir, config.manual_dir)
  pretrained.resolve_pretrained(config.model.pretrained)  # stops with instructions if missing
  train_sources = {k: sources[input_pipeline.fold_splits(k)[0]] for k in folds}
  train_indices = {k: input_pipeline.labelled_indices(train_sources[k]) for k in folds}
  if resolve_multi_run(config.get("multi_run", "sequential")) == "vmap":
    variables = train_folds_stacked(config, workdir, folds, train_sources, train_indices)
  else:
    variables = {}
    for k in tqdm(folds, desc="LORO folds", unit="fold", position=0, disable=not config.progress):
      variables[k] = train_fold(config, workdir, k, train_sources[k], train_indices[k])
  rows = evaluate_folds(config, variables, {k: sources[f"rat{k}"] for k in folds})
  results = write_outputs(config, workdir, rows)
  log.info("LORO: F1 %.4f, accuracy %.2f%% (%d test images)", results["loro"]["f1"],
               results["loro"]["accuracy"], len(rows))
  return results
