"""Several folds trained side by side in one vmapped program (`config.multi_run`).

`train_folds_stacked` runs the same trainings as `train.train_fold` one after
another (same initial states, batches and keys, per-fold checkpoints and logs;
equal up to float summation order), with the folds stacked on a leading axis
of every array. On the CPU vmapped convolutions are slower, so `auto` picks
per backend what `benchmarks/multi_run.py` measured faster (figures:
benchmarks/README.md, "Multi-run").
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from painseeker_jax import inference, layout, sharding, train, writers

log = logging.getLogger("painseeker")

MULTI_RUN = ("auto", "sequential", "vmap")
# config.multi_run="auto": the faster choice measured on each backend (default: sequential).
_MULTI_RUN_AUTO = {"cpu": "sequential"}


def resolve_multi_run(name: str) -> str:
  """`sequential` or `vmap`: how the folds of a run are trained (`auto` by backend)."""
  if name not in MULTI_RUN:
    raise ValueError(f"config.multi_run={name!r}; use auto, sequential or vmap")
  if name == "auto":
    return _MULTI_RUN_AUTO.get(jax.default_backend(), "sequential")
  return name


def make_stacked_step(trainer: train.Trainer):
  """jit(vmap(train_step)) over runs stacked on a leading axis, with a per-run `active` flag.

  fn(state_R, batch_RxB, rng_R, lr_scale_R, active_R) -> (state_R, metrics_R). A run whose flag
  is False keeps its state unchanged (its batch is padding): folds with fewer
  steps per epoch, or already further along after a resume, wait for the others.
  The batch axis B is sharded along `data`, the run axis and the states are whole.
  """
  loss_cfg = trainer.config.loss

  scheduled = train.is_scheduled(trainer.config)

  def masked_step(state, batch, rng, lr_scale, active):
    new_state, out = train.train_step(
      state, batch, rng, lr_scale, model=trainer.model, loss_cfg=loss_cfg, scheduled=scheduled
    )
    return jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state), out

  repl = sharding.replicated(trainer.mesh)
  return jax.jit(
    jax.vmap(masked_step),
    donate_argnums=0,
    in_shardings=(repl, sharding.fold_batch_sharding(trainer.mesh), repl, repl, repl),
    out_shardings=(repl, repl),
  )


def _accumulate_stacked(sums: dict, pending, todo, bar) -> None:
  step_R, active, out = pending
  out = jax.device_get(out)
  for r, k in enumerate(todo):
    if active[r]:
      train.check_finite(k, step_R[r], out["loss"][r], out["grad_norm"][r])
      for name, v in out.items():
        sums[k][name] = sums[k].get(name, 0.0) + float(v[r])
  bar.update(1)
  bar.set_postfix(loss=f"{float(np.mean(out['loss'][np.asarray(active)])):.4f}")


def train_folds_stacked(
  trainer: train.Trainer, workdir: str, folds, sources: dict, indices: dict
) -> dict:
  """Trains the folds side by side in one vmapped program; returns {held_out: variables}."""
  config, mesh = trainer.config, trainer.mesh
  started = {}
  try:
    for k in folds:
      started[k] = train.start_fold(trainer, workdir, k, len(indices[k]))
  except BaseException:
    for f in started.values():
      f.manager.close()
    raise
  todo = [k for k in folds if started[k].start_epoch < config.num_epochs]
  for k in folds:
    if k not in todo:
      started[k].manager.close()
  if not todo:
    return {k: train.state_variables(started[k].state) for k in folds}

  log.info(
    "training folds %s side by side (config.multi_run=vmap)",
    ", ".join(layout.fold_label(k) for k in todo),
  )
  step_fn = make_stacked_step(trainer)
  steps = {k: started[k].steps_per_epoch for k in folds}
  start_epoch = {k: started[k].start_epoch for k in folds}
  stacked = sharding.replicate(inference.stack_variables([started[k].state for k in todo]), mesh)
  keys = jnp.stack([started[k].step_key for k in todo])
  writer = {
    k: writers.MetricWriter(layout.tensorboard_dir(workdir, k), layout.metrics_path(workdir, k))
    for k in todo
  }
  first = min(start_epoch[k] for k in todo)
  total = sum(
    max(steps[k] for k in todo if e >= start_epoch[k]) for e in range(first, config.num_epochs)
  )
  bar = tqdm(
    total=total,
    desc="folds side by side",
    unit="step",
    position=1,
    leave=False,
    disable=not config.progress,
    dynamic_ncols=True,
  )
  padding = None  # zeros shaped like a real batch, for runs that wait
  caches = {k: train.decoded_cache(config, len(todo)) for k in todo}
  try:
    for epoch in range(first, config.num_epochs):
      t0 = time.time()
      bar.set_description(f"folds side by side, epoch {epoch + 1}/{config.num_epochs}")
      live = [k for k in todo if epoch >= start_epoch[k]]
      its = {
        k: iter(train.epoch_batches(config, k, epoch, sources[k], indices[k], caches[k]))
        for k in live
      }
      sums, pending = {k: {} for k in live}, None
      for i in range(max(steps[k] for k in live)):
        active = [k in its and i < steps[k] for k in todo]
        real = {k: next(its[k]) for k, a in zip(todo, active) if a}
        real = {k: train.step_inputs(config, b) for k, b in real.items()}
        padding = padding or {n: np.zeros_like(a) for n, a in next(iter(real.values())).items()}
        batch = [real.get(k, padding) for k in todo]
        step_R = [epoch * steps[k] + i for k in todo]  # = the fold's state.step where active
        rngs = jax.vmap(jax.random.fold_in)(keys, jnp.asarray(step_R, jnp.uint32))
        stacked_batch = sharding.shard_fold_batch(
          {n: np.stack([b[n] for b in batch]) for n in padding}, mesh
        )
        lr_R = [
          train.step_lr_scale(config, s, steps[k] * config.num_epochs) for k, s in zip(todo, step_R)
        ]
        stacked, out = step_fn(stacked, stacked_batch, rngs, jnp.asarray(lr_R), jnp.asarray(active))
        if pending is not None:
          _accumulate_stacked(sums, pending, todo, bar)
        pending = (step_R, active, out)
      _accumulate_stacked(sums, pending, todo, bar)
      seconds = time.time() - t0
      images = sum(steps[k] for k in live) * config.batch_size
      for r, k in enumerate(todo):
        if k in live:
          state_k = jax.tree.map(lambda x, r=r: x[r], stacked)
          train.end_epoch(config, started[k], epoch, state_k, sums[k], seconds, writer[k], images)
  finally:
    bar.close()
    for k in todo:
      writer[k].close()
      started[k].manager.close()
  out = {k: train.state_variables(started[k].state) for k in folds}
  for r, k in enumerate(todo):
    out[k] = train.state_variables(jax.tree.map(lambda x, r=r: x[r], stacked))
  return out
