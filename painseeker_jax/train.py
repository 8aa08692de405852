"""Trains the model of one fold: `TrainState`, the pure `train_step` and the loop.

  * `make_trainer(config)` builds, once per run, what every fold shares: the
    model, the optimizer, the device mesh and the jit-compiled init and step.
    It also checks the training fields of the config (before any data is
    built or anything written).
  * `train_step` is pure (state, batch, rng, lr_scale) -> (state, metrics), compiled with
    the state donated; randomness only from explicit keys folded with the step.
  * `train_fold` trains one fold (a held-out rat, or animal of a lab's set),
    checkpointing with orbax every
    `config.checkpoint_every_epochs` epochs (paths: `layout`); a rerun resumes
    from the latest checkpoint (mid-fold included) and a finished fold is
    never retrained.

Data parallel on every device (`painseeker_jax.sharding`): the batch is sharded
along the mesh axis `data`, parameters and optimizer state are replicated,
BatchNorm statistics are those of the global batch. One device is a mesh of one.
Several folds side by side in one program: `painseeker_jax.multi_run`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from tqdm.auto import tqdm

from painseeker_jax import (
  inference,
  input_pipeline,
  layout,
  losses,
  models,
  pretrained,
  sharding,
  writers,
)

log = logging.getLogger("painseeker")


class TrainState(train_state.TrainState):
  batch_stats: Any


class NonFiniteError(FloatingPointError):
  """Loss or gradients became NaN/inf."""


SCHEDULES = ("constant", "cosine")
WD_PARAMS = ("all", "kernels")


def _decay_mask(wd_params: str):
  """None (decay every parameter, PyTorch's default) or a mask that decays only the
  kernels of convolutions and dense layers (no BatchNorm scales/biases, no biases)."""
  if wd_params == "all":
    return None
  if wd_params == "kernels":
    return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  raise ValueError(f"config.optimizer.wd_params={wd_params!r}; use one of {', '.join(WD_PARAMS)}")


def make_optimizer(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`adam_l2`: PyTorch's Adam(weight_decay=wd), i.e. wd * param added to the
  gradient before the Adam moments (the paper's setting). `adamw`: decoupled
  weight decay (Loshchilov & Hutter). `opt.wd_params`: "all" decays every
  parameter, as PyTorch does by default; "kernels" only conv/dense kernels.

  The learning rate here is the base rate; a schedule (`opt.schedule`) scales
  the whole update per step (`lr_multiplier`, passed to `train_step`)."""
  mask = _decay_mask(opt.get("wd_params", "all"))
  if opt.name == "adam_l2":
    return optax.chain(
      optax.add_decayed_weights(opt.weight_decay, mask=mask),
      optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps),
    )
  if opt.name == "adamw":
    return optax.adamw(
      opt.learning_rate,
      b1=opt.b1,
      b2=opt.b2,
      eps=opt.eps,
      weight_decay=opt.weight_decay,
      mask=mask,
    )
  raise ValueError(f"config.optimizer.name={opt.name!r}; use adam_l2 or adamw")


def lr_multiplier(schedule: str, step, total_steps: int):
  """The factor of the base learning rate at `step` of `total_steps` (on the host, numpy).

  constant: 1. cosine: 0.5 * (1 + cos(pi * step / total_steps)), from 1 at the
  first step to 0 after the last (no warm-up). Per fold, as each fold has its own
  number of steps."""
  if schedule == "constant":
    return 1.0
  if schedule == "cosine":
    return 0.5 * (1.0 + np.cos(np.pi * np.minimum(step, total_steps) / total_steps))
  raise ValueError(f"config.optimizer.schedule={schedule!r}; use one of {', '.join(SCHEDULES)}")


def train_step(
  state: TrainState, batch: dict, rng: jax.Array, lr_scale=1.0, *, model, loss_cfg, scheduled=False
) -> tuple[TrainState, dict]:
  """One optimisation step on `batch` (uint8 images, int labels). Pure.

  `rng` is unused by the current models (no dropout) but is part of the
  signature so that stochastic layers get their key folded in with the step.
  `lr_scale`: the schedule's factor of the base learning rate for this step
  (`lr_multiplier`); applied to the update when `scheduled` (static), so a
  constant schedule runs exactly the unscheduled program.
  """
  images = inference.normalize(batch["image"])
  labels = batch["label"]

  def loss_fn(params):
    variables = {"params": params, "batch_stats": state.batch_stats}
    logits, beta, au_logits, new_bs = models.forward(
      model, variables, images, train=True, rngs={"dropout": rng}
    )
    loss, parts = losses.total_loss(
      logits, labels, beta, loss_cfg.lambda_prsc, loss_cfg.k_h, loss_cfg.delta
    )
    if au_logits is not None:  # the AU heads (config.loss.lambda_au > 0)
      parts["au"] = losses.au_cross_entropy(au_logits, batch["au"])
      loss = loss + loss_cfg.lambda_au * parts["au"]
    return loss, (parts, logits, new_bs)

  (loss, (parts, logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if scheduled:
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: u * lr_scale, updates)
    state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      batch_stats=new_bs,
    )
  else:
    state = state.apply_gradients(grads=grads, batch_stats=new_bs)
  out = {
    "loss": loss,
    "ce": parts["ce"],
    "prsc": parts["prsc"],
    **({"au": parts["au"]} if "au" in parts else {}),
    "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
    "grad_norm": optax.tree.norm(grads),
  }
  return state, out


@dataclasses.dataclass(frozen=True)
class Trainer:
  """What every fold of a run shares; built once per run by `make_trainer`.

  `init(rng)` -> a fresh TrainState (replicated over `mesh`); `step(state,
  batch, rng, lr_scale=1)` -> (state, metrics), the batch sharded along `data`,
  `lr_scale` the schedule's factor for the step (`step_lr_scale`).
  """

  config: ml_collections.ConfigDict
  model: Any
  mesh: Any
  init: Callable
  step: Callable


def check_field(config, field: str, ok: Callable[[Any], bool], what: str) -> None:
  """Raises ValueError naming `config.<field>` (a dotted path) unless `ok(value)`."""
  value = config
  for part in field.split("."):
    value = value[part]
  try:
    good = ok(value)
  except TypeError:
    good = False
  if not good:
    raise ValueError(f"config.{field}={value!r}: must be {what}")


def is_int(x) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_number(x) -> bool:
  return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and np.isfinite(x)


# The numeric training fields: (field, test, what it must be).
_TRAINING_FIELDS = (
  ("seed", lambda x: is_int(x) and x >= 0, "an integer >= 0"),
  ("num_epochs", lambda x: is_int(x) and x >= 1, "an integer >= 1"),
  ("batch_size", lambda x: is_int(x) and x >= 1, "an integer >= 1"),
  ("checkpoint_every_epochs", lambda x: is_int(x) and x >= 1, "an integer >= 1"),
  ("image_size", lambda x: is_int(x) and x >= 32, "an integer >= 32 (the trunk downsamples 32x)"),
  ("resize_size", is_int, "an integer"),
  ("optimizer.learning_rate", lambda x: is_number(x) and x > 0, "a finite number > 0"),
  ("optimizer.weight_decay", lambda x: is_number(x) and x >= 0, "a finite number >= 0"),
  ("optimizer.b1", lambda x: is_number(x) and 0 <= x < 1, "a number in [0, 1)"),
  ("optimizer.b2", lambda x: is_number(x) and 0 <= x < 1, "a number in [0, 1)"),
  ("optimizer.eps", lambda x: is_number(x) and x > 0, "a finite number > 0"),
  ("optimizer.schedule", lambda x: x in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
  ("optimizer.wd_params", lambda x: x in WD_PARAMS, f"one of {', '.join(WD_PARAMS)}"),
  ("loss.lambda_prsc", lambda x: is_number(x) and x >= 0, "a finite number >= 0"),
  ("loss.delta", lambda x: is_number(x) and x >= 0, "a finite number >= 0"),
  ("loss.k_h", lambda x: is_int(x) and x >= 1, "an integer >= 1"),
  ("loss.lambda_au", lambda x: is_number(x) and x >= 0, "a finite number >= 0"),
  ("input.num_threads", lambda x: is_int(x) and x >= 1, "an integer >= 1"),
  ("input.num_workers", lambda x: is_int(x) and x >= 0, "an integer >= 0"),
  ("input.cache_mb", lambda x: is_int(x) and x >= 0, "an integer >= 0 (MB)"),
)


def check_batch_fits(config, num_train: int, what: str) -> None:
  """A training set must hold at least one batch (else an epoch has no step)."""
  if num_train < config.batch_size:
    raise ValueError(
      f"config.batch_size={config.batch_size} is larger than the {num_train} labelled training "
      f"images of {what}; lower --config.batch_size"
    )


def make_trainer(config: ml_collections.ConfigDict, mesh=None) -> Trainer:
  """Checks the training fields of `config` and builds the run's trainer.

  Data parallel over `mesh` (default: all devices of all hosts). Nothing is
  compiled until the first call.
  """
  for field, ok, what in _TRAINING_FIELDS:
    check_field(config, field, ok, what)
  if config.resize_size < config.image_size:
    raise ValueError(
      f"config.resize_size ({config.resize_size}) < config.image_size ({config.image_size})"
    )
  sharding.maybe_initialize_distributed()  # before JAX touches a device; multi-host only
  mesh = sharding.make_mesh() if mesh is None else mesh
  model = inference.make_model(config)
  tx = make_optimizer(config.optimizer)
  if str(config.model.pretrained or "none").lower() != "none" and config.model.size != "full":
    raise ValueError("config.model.pretrained needs config.model.size='full' (the ResNet-18 trunk)")
  sharding.check_divisible(config.batch_size, mesh.size, "config.batch_size")
  k = inference.num_regions(model, config.image_size)
  if k is not None:  # PRSC is computed (and logged) even with lambda 0
    losses.validate_prsc_args(config.loss.k_h, k, config.loss.delta)

  data, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)

  @functools.partial(jax.jit, out_shardings=repl)
  def init(rng):
    variables = model.init(rng, x, train=False)
    return TrainState.create(
      apply_fn=model.apply, params=variables["params"], batch_stats=variables["batch_stats"], tx=tx
    )

  loss_cfg = ml_collections.FrozenConfigDict(config.loss)
  compiled_step = jax.jit(
    functools.partial(train_step, model=model, loss_cfg=loss_cfg, scheduled=is_scheduled(config)),
    donate_argnums=0,
    in_shardings=(repl, data, repl, repl),
    out_shardings=(repl, repl),
  )

  def step(state, batch, rng, lr_scale=1.0):
    return compiled_step(state, batch, rng, np.float32(lr_scale))

  return Trainer(config=config, model=model, mesh=mesh, init=init, step=step)


def step_inputs(config, batch: dict) -> dict:
  """What `train_step` reads of a batch: images, labels and, for AU heads, the AU scores."""
  keys = ("image", "label", "au") if inference.au_names(config) else ("image", "label")
  return {k: batch["au_scores" if k == "au" else k] for k in keys}


def is_scheduled(config) -> bool:
  return config.optimizer.schedule != "constant"


def step_lr_scale(config, step: int, total_steps: int) -> np.float32:
  """This step's learning-rate factor, as the array `Trainer.step` takes."""
  return np.float32(lr_multiplier(config.optimizer.schedule, step, total_steps))


def state_variables(state: TrainState) -> dict:
  """The model's variables `{"params", "batch_stats"}` of a train state."""
  return {"params": state.params, "batch_stats": state.batch_stats}


@dataclasses.dataclass
class Fold:
  """One fold's training as it starts (fresh, pretrained or resumed)."""

  held_out: int | str  # rat number, or split name of the held-out animal; 0: none
  state: TrainState
  manager: ocp.CheckpointManager
  step_key: jax.Array
  steps_per_epoch: int

  @property
  def start_epoch(self) -> int:
    return int(self.state.step) // self.steps_per_epoch


def start_fold(trainer: Trainer, workdir: str, held_out, num_train: int) -> Fold:
  """The fresh (or pretrained) state of a fold or its latest checkpoint; checks the resume point.

  The fold's keys come from `fold_in(key(config.seed), input_pipeline.fold_seed(held_out))`:
  the rat number, or a stable hash of the held-out animal's split name."""
  config = trainer.config
  steps_per_epoch = num_train // config.batch_size
  fold_key = jax.random.fold_in(jax.random.key(config.seed), input_pipeline.fold_seed(held_out))
  init_key, step_key = jax.random.split(fold_key)
  state = trainer.init(init_key)
  if pretrained.resolve_pretrained(config.model.pretrained):  # the heads keep their fresh init
    v = pretrained.init_from_pretrained(config.model.pretrained, state_variables(state))
    state = sharding.replicate(
      state.replace(params=v["params"], batch_stats=v["batch_stats"]), trainer.mesh
    )
  total_steps = steps_per_epoch * config.num_epochs
  mngr, state = _restore_readable(workdir, held_out, state, trainer.mesh)
  if mngr.latest_step() is not None:
    log.info(
      "fold %s: resumed from step %d of %d",
      layout.fold_label(held_out),
      int(state.step),
      total_steps,
    )
  start_step = int(state.step)
  if start_step % steps_per_epoch and start_step != total_steps:
    mngr.close()
    raise RuntimeError(
      f"{mngr.directory}: checkpoint at step {start_step} is not at an epoch boundary of "
      f"{steps_per_epoch} steps; was config.batch_size changed? Use a new --workdir."
    )
  return Fold(held_out, state, mngr, step_key, steps_per_epoch)


def _restore_readable(workdir: str, held_out, state, mesh):
  """(checkpoint manager, state): the fold's newest checkpoint that restores, or `state` if it has
  none. Unreadable newer checkpoints (a truncated file after a crash) are moved aside with a
  warning (`layout.set_aside_checkpoint`); when none restores, a ValueError names them and the
  command that restarts the fold (the other folds are kept)."""
  mngr = layout.checkpoint_manager(workdir, held_out)
  broken = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = mngr.restore(step, args=ocp.args.StandardRestore(state))
    except Exception as e:  # orbax, TensorStore and JSON errors: the files are damaged
      broken.append((step, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"))
      continue
    if broken:
      mngr.close()
      for b, why in broken:
        moved = layout.set_aside_checkpoint(workdir, held_out, b)
        log.warning(
          "fold %s: checkpoint step %d is unreadable (%s); moved to %s, resuming from step %d",
          layout.fold_label(held_out),
          b,
          why,
          moved,
          step,
        )
      mngr = layout.checkpoint_manager(workdir, held_out)
    return mngr, sharding.replicate(restored, mesh)
  if broken:
    mngr.close()
    ckpt = layout.checkpoint_dir(workdir, held_out)
    steps = "; ".join(f"step {b}: {why}" for b, why in broken)
    raise ValueError(
      f"{ckpt}: no readable checkpoint of fold {layout.fold_label(held_out)} ({steps}). To "
      f"train this fold again from the start (the other folds are kept), remove its "
      f"checkpoints: rm -r '{ckpt}'"
    )
  return mngr, state


def decoded_cache(config, num_folds: int = 1) -> input_pipeline.DecodedCache:
  """A fold's cache of decoded training images: its share of `config.input.cache_mb` when
  `num_folds` folds train side by side."""
  return input_pipeline.DecodedCache(config.input.cache_mb * 2**20 // num_folds)


def epoch_batches(config, held_out, epoch: int, source, indices, cache=None):
  """One epoch of a fold's augmented training batches (seeded by seed, fold and epoch); `cache`:
  the fold's `decoded_cache`, kept across its epochs."""
  return input_pipeline.train_batches(
    source,
    indices,
    batch_size=config.batch_size,
    image_size=config.image_size,
    resize_size=config.resize_size,
    seed=input_pipeline.epoch_seed(config.seed, held_out, epoch),
    num_threads=config.input.num_threads,
    num_workers=config.input.num_workers,
    cache=cache,
  )


def end_epoch(
  config, fold: Fold, epoch: int, state, sums: dict, seconds: float, writer, images=None
):
  """Logs the epoch's mean metrics and saves the checkpoint when it is due.

  `images`: the images trained on in `seconds` (default: this fold's epoch; all
  folds' when they train side by side).
  """
  summary = {k: v / fold.steps_per_epoch for k, v in sums.items()}
  summary["epoch_seconds"] = seconds
  summary["images_per_second"] = (images or fold.steps_per_epoch * config.batch_size) / seconds
  writer.write_scalars(int(state.step), summary)
  log.info(
    "fold %s epoch %d/%d: %s",
    layout.fold_label(fold.held_out),
    epoch + 1,
    config.num_epochs,
    ", ".join(f"{k}={v:.4g}" for k, v in summary.items()),
  )
  if (epoch + 1) % config.checkpoint_every_epochs == 0 or epoch + 1 == config.num_epochs:
    fold.manager.save(int(state.step), args=ocp.args.StandardSave(state))
    fold.manager.wait_until_finished()


def check_finite(held_out, step: int, loss, grad_norm) -> None:
  if not (np.isfinite(loss) and np.isfinite(grad_norm)):
    raise NonFiniteError(
      f"fold {layout.fold_label(held_out)}, step {step}: non-finite loss ({loss}) or gradient "
      f"norm ({grad_norm}); lower config.optimizer.learning_rate or check the input images."
    )


def _accumulate(sums: dict, pending, held_out, bar) -> None:
  """Adds a finished step's metrics (read from the device) to the epoch sums."""
  step, out = pending
  out = jax.device_get(out)
  check_finite(held_out, step, out["loss"], out["grad_norm"])
  for k, v in out.items():
    sums[k] = sums.get(k, 0.0) + float(v)
  bar.update(1)
  bar.set_postfix(loss=f"{float(out['loss']):.4f}")


def train_fold(trainer: Trainer, workdir: str, held_out, source, indices) -> dict:
  """Trains (or resumes, or just loads) the model of one fold; returns its variables."""
  config = trainer.config
  fold = start_fold(trainer, workdir, held_out, len(indices))
  state = fold.state
  total_steps = fold.steps_per_epoch * config.num_epochs
  if int(state.step) >= total_steps:
    fold.manager.close()
    return state_variables(state)

  writer = writers.MetricWriter(
    layout.tensorboard_dir(workdir, held_out), layout.metrics_path(workdir, held_out)
  )
  bar = tqdm(
    total=total_steps,
    initial=int(state.step),
    desc=f"fold {layout.fold_label(held_out)}",
    unit="step",
    position=1,
    leave=False,
    disable=not config.progress,
    dynamic_ncols=True,
  )
  cache = decoded_cache(config)
  step = int(state.step)  # counted here from now on: reading state.step would wait for the device
  try:
    for epoch in range(fold.start_epoch, config.num_epochs):
      t0 = time.time()
      bar.set_description(
        f"fold {layout.fold_label(held_out)} epoch {epoch + 1}/{config.num_epochs}"
      )
      sums, pending = {}, None
      for batch in epoch_batches(config, held_out, epoch, source, indices, cache):
        batch = sharding.shard_batch(step_inputs(config, batch), trainer.mesh)
        state, out = trainer.step(
          state,
          batch,
          jax.random.fold_in(fold.step_key, step),
          step_lr_scale(config, step, total_steps),
        )
        if pending is not None:  # read the previous step's metrics while this one runs
          _accumulate(sums, pending, held_out, bar)
        pending = (step, out)
        step += 1
      _accumulate(sums, pending, held_out, bar)
      end_epoch(config, fold, epoch, state, sums, time.time() - t0, writer)
  finally:
    bar.close()
    writer.close()
    fold.manager.close()
  return state_variables(state)
