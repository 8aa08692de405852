"""`painseeker pretrain-trunk`: a ResNet-18 trunk pretrained on synthetic rats (issue #21).

The stand-in for ImageNet on the twin: ImageNet weights cannot be downloaded on our machines,
and the paper's claims are about a pretrained trunk fine-tuned at 224 px. The pool
(`synthetic.pool_plan`) holds rats that are not the twin's six (new identities from the same
generator) with the twin's head poses, lighting, backgrounds and occluders.

The pretext targets carry no pain information by construction:
  * head pose (yaw, pitch, roll; regression, degrees / `POSE_SCALE`): sampled from the
    nuisance stream, independent of the AU scores;
  * identity (which of the pool's rats; classification): fixed per rat, while every rat's AU
    scores are drawn uniformly and independently.
Landmark positions were not chosen: the ears' and the muzzle's landmarks move with the ear and
nose action units, so they would teach the trunk pain. `pretrain_results.json` records the
correlation of every target with every AU score over the pool (the leak check) and the
held-out pose error and identity accuracy.

Steps (all in `--workdir`, resumable: a rerun continues where it stopped; `config.json` ties
the work directory to one configuration, and a rerun with another is refused):
  1. render the pool into shards (`pool/shard_00000.npz` ...: images at
     `config.resize_size`, pose, identity, AU scores), each written atomically;
  2. train `models.ResNet18(num_classes=3 + num_rats)` (random crop of `image_size`, horizontal
     flip with yaw and roll negated), AdamW with a cosine schedule; an orbax checkpoint and the
     epoch's training metrics (`epochs.json`) after every epoch;
  3. evaluate on the held-out images of every rat (`val_per_rat`), write
     `pretrain_results.json` and the trunk to `--output` as a torchvision-layout
     `.safetensors` state dict (`pretrained.save_state_dict`), the file format the ImageNet
     path reads: `--config.model.pretrained=<file>` uses exactly that code path. The results
     hold the provenance (code, versions, CPU) and the file's sha256, which the fine-tuned runs'
     results.json repeat.

Run command, runtime and the measured pretext figures: configs/pretrain.py and
docs/results.md "A pretrained stand-in trunk".
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image

from painseeker_jax import layout, loro, models, pretrained

log = logging.getLogger("painseeker")

POSE_SCALE = 30.0  # degrees per unit of the regression target
SHARD_SIZE = 256  # pool images per shard file
RESULTS_JSON = "pretrain_results.json"
EPOCHS_JSON = "epochs.json"  # the finished epochs' training metrics, one dict per epoch
# Config fields that change neither the pool nor the trunk (a work directory accepts them).
_FREE_FIELDS = ("progress", "render_workers", "conv")


# ---------------------------------------------------------------------------
# The pool.


def _shard_path(workdir: str, k: int) -> str:
  return os.path.join(workdir, "pool", f"shard_{k:05d}.npz")


def _render_shard(specs, size: int, workers: int) -> dict[str, np.ndarray]:
  import io

  from tfds_ratspain.ratspain import synthetic

  images = []
  for ex in synthetic.render_many(specs, workers):
    img = Image.open(io.BytesIO(ex["image"])).convert("RGB")
    if img.size != (size, size):
      img = img.resize((size, size), Image.BILINEAR)
    images.append(np.asarray(img, np.uint8))
  return {
    "images": np.stack(images),
    "pose": np.array([s.head_pose for s in specs], np.float32),
    "rat": np.array([s.rat_id for s in specs], np.int32),
    "au": np.array([s.au_scores for s in specs], np.int32),
    "index": np.array([int(s.filename.rsplit("_", 1)[1][:-4]) for s in specs], np.int32),
  }


def build_pool(config, workdir: str, progress: bool | None = None) -> dict[str, np.ndarray]:
  """Renders the pool's missing shards, then returns the whole pool (arrays over images)."""
  from tqdm.auto import tqdm

  from tfds_ratspain.ratspain import synthetic

  specs = synthetic.pool_plan(config.seed, config.num_rats, config.per_rat)
  num_shards = -(-len(specs) // SHARD_SIZE)
  os.makedirs(os.path.join(workdir, "pool"), exist_ok=True)
  todo = [k for k in range(num_shards) if not os.path.exists(_shard_path(workdir, k))]
  bar = tqdm(
    total=len(specs),
    initial=(num_shards - len(todo)) * SHARD_SIZE if todo else len(specs),
    desc="render pool",
    unit="img",
    disable=None if progress is None else not progress,
  )
  for k in todo:
    chunk = specs[k * SHARD_SIZE : (k + 1) * SHARD_SIZE]
    arrays = _render_shard(chunk, config.resize_size, config.render_workers or None)
    path = _shard_path(workdir, k)
    with layout.replacing(path) as tmp:
      np.savez(tmp, **arrays)
    bar.update(len(chunk))
  bar.close()
  shards = [np.load(_shard_path(workdir, k)) for k in range(num_shards)]
  pool = {key: np.concatenate([s[key] for s in shards]) for key in shards[0].files}
  if len(pool["rat"]) != len(specs) or pool["images"].shape[1] != config.resize_size:
    raise ValueError(
      f"{os.path.join(workdir, 'pool')}: its shards do not match the config (another "
      "num_rats, per_rat or resize_size); use another --workdir"
    )
  return pool


def split_pool(pool, val_per_rat: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices of the training and held-out images: the last `val_per_rat` of every rat."""
  per_rat = int(pool["index"].max()) + 1
  val = pool["index"] >= per_rat - val_per_rat
  return np.flatnonzero(~val), np.flatnonzero(val)


def leak_check(pool) -> dict:
  """Pearson correlation of every pretext target (yaw, pitch, roll, identity one-hot) with every
  AU score over the pool; the largest |r| per target kind."""
  au = pool["au"].astype(np.float64)

  def corr(x):
    x = np.asarray(x, np.float64)
    xs, aus = x - x.mean(), au - au.mean(0)
    den = np.sqrt((xs**2).sum() * (aus**2).sum(0))
    return np.where(den > 0, (xs @ aus) / np.where(den > 0, den, 1), 0.0)

  pose = {
    n: corr(pool["pose"][:, i]).round(4).tolist() for i, n in enumerate(("yaw", "pitch", "roll"))
  }
  rats = np.unique(pool["rat"])
  ident = np.max([np.abs(corr(pool["rat"] == r)) for r in rats]) if len(rats) > 1 else 0.0
  return {
    "au_order": ["orbital", "ear", "nose", "whisker"],
    "pose_vs_au": pose,
    "max_abs_identity_vs_au": round(float(ident), 4),
    "num_images": int(len(au)),
  }


# ---------------------------------------------------------------------------
# Training.


def make_model(config) -> models.ResNet:
  """ResNet-18 with 3 pose outputs and one logit per pool rat."""
  return models.ResNet18(
    num_classes=3 + int(config.num_rats), conv=models.resolve_conv(config.conv)
  )


def loss_fn(outputs_BxC, pose_Bx3, identity_B, pose_weight: float):
  """pose_weight * mean squared error of the pose (in units of POSE_SCALE degrees) + the
  cross-entropy of the identity; returns (loss, (pose_mse, identity_ce))."""
  pose_mse = jnp.mean((outputs_BxC[:, :3] - pose_Bx3 / POSE_SCALE) ** 2)
  ce = optax.softmax_cross_entropy_with_integer_labels(outputs_BxC[:, 3:], identity_B).mean()
  return pose_weight * pose_mse + ce, (pose_mse, ce)


def augment(images_BxSxSx3, pose_Bx3, size: int, rng: np.random.Generator):
  """Random size x size crops and horizontal flips (a flip negates yaw and roll)."""
  b, s = images_BxSxSx3.shape[:2]
  ys, xs = rng.integers(0, s - size + 1, b), rng.integers(0, s - size + 1, b)
  flip = rng.random(b) < 0.5
  out = np.empty((b, size, size, 3), np.uint8)
  pose = pose_Bx3.copy()
  for i in range(b):
    crop = images_BxSxSx3[i, ys[i] : ys[i] + size, xs[i] : xs[i] + size]
    out[i] = crop[:, ::-1] if flip[i] else crop
  pose[flip, 0] *= -1
  pose[flip, 2] *= -1
  return out, pose


def _center(images_BxSxSx3, size: int):
  o = (images_BxSxSx3.shape[1] - size) // 2
  return images_BxSxSx3[:, o : o + size, o : o + size]


def make_steps(config, model, total_steps: int):
  from painseeker_jax import inference
  from painseeker_jax.train import TrainState

  schedule = optax.cosine_decay_schedule(config.optimizer.lr, max(1, total_steps))
  tx = optax.adamw(schedule, weight_decay=config.optimizer.weight_decay)

  def init(key):
    x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    v = model.init(key, x, train=False)
    return TrainState.create(
      apply_fn=model.apply, params=v["params"], tx=tx, batch_stats=v["batch_stats"]
    )

  @jax.jit
  def train_step(state, images, pose, identity):
    x = inference.normalize(images)

    def f(params):
      out, mutated = model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      loss, aux = loss_fn(out, pose, identity, config.loss.pose_weight)
      return loss, (aux, mutated["batch_stats"])

    (loss, ((pose_mse, ce), stats)), grads = jax.value_and_grad(f, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads).replace(batch_stats=stats)
    return state, {"loss": loss, "pose_mse": pose_mse, "identity_ce": ce}

  @jax.jit
  def predict(state, images):
    v = {"params": state.params, "batch_stats": state.batch_stats}
    return model.apply(v, inference.normalize(images), train=False)

  return jax.jit(init), train_step, predict


def evaluate(predict, state, pool, indices, config) -> dict:
  """Held-out pose mean absolute error (degrees, per angle) and identity accuracy; every image
  counted once (the last batch padded, the padding dropped)."""
  bs = config.batch_size
  errs, hits = [], []
  first = int(config.first_rat)
  for i in range(0, len(indices), bs):
    idx = indices[i : i + bs]
    imgs = _center(pool["images"][idx], config.image_size)
    pad = bs - len(idx)
    if pad:
      imgs = np.concatenate([imgs, np.zeros((pad, *imgs.shape[1:]), imgs.dtype)])
    out = np.asarray(predict(state, imgs))[: len(idx)]
    errs.append(np.abs(out[:, :3] * POSE_SCALE - pool["pose"][idx]))
    hits.append(out[:, 3:].argmax(1) == pool["rat"][idx] - first)
  err, hit = np.concatenate(errs), np.concatenate(hits)
  return {
    "num_images": int(len(indices)),
    "pose_mae_deg": dict(zip(("yaw", "pitch", "roll"), err.mean(0).round(3).tolist())),
    "identity_accuracy": round(float(hit.mean()), 4),
    "identity_chance": round(1.0 / int(config.num_rats), 4),
  }


def check_settings(config) -> None:
  """Raises ValueError naming the field (before a pool is rendered or a work directory tied to
  the config) unless the sizes and counts can train."""
  checks = (
    ("per_rat", config.per_rat >= 1, "must be >= 1"),
    ("num_rats", config.num_rats >= 2, "must be >= 2 (identity is a target)"),
    ("val_per_rat", 0 <= config.val_per_rat < config.per_rat, "must be in 0..per_rat - 1"),
    ("batch_size", config.batch_size >= 1, "must be >= 1"),
    ("num_epochs", config.num_epochs >= 1, "must be >= 1"),
    (
      "image_size",
      0 < config.image_size <= config.resize_size,
      f"must be in 1..resize_size ({config.resize_size}): the training crops are cut from "
      "the rendered faces",
    ),
  )
  for field, ok, what in checks:
    if not ok:
      raise ValueError(f"--config.{field}={config[field]}: {what}")


def run(config: ml_collections.ConfigDict, workdir: str, output: str) -> dict:
  """Builds the pool, trains (resuming), evaluates and writes the trunk; returns the results.
  Holds `<workdir>/run.lock` throughout (a second process on the work directory is refused)."""
  check_settings(config)
  with layout.claimed(workdir, "pretrain-trunk"):
    return _run(config, workdir, output)


def _run(config: ml_collections.ConfigDict, workdir: str, output: str) -> dict:
  import orbax.checkpoint as ocp
  from tqdm.auto import tqdm

  from tfds_ratspain.ratspain import synthetic

  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.first_rat = synthetic.POOL_FIRST_RAT
  if not output.endswith(".safetensors"):
    raise ValueError(f"--output {output}: the trunk is written as a .safetensors file")
  # One configuration per work directory: its pool shards and checkpoints belong to it.
  fixed = {k: v for k, v in config.to_dict().items() if k not in _FREE_FIELDS}
  layout.check_config(ml_collections.ConfigDict(fixed), workdir)
  t0 = time.time()
  pool = build_pool(config, workdir, config.progress)
  train_idx, val_idx = split_pool(pool, config.val_per_rat)
  if len(train_idx) < config.batch_size:
    raise ValueError(
      f"the pool has {len(train_idx)} training images, fewer than batch_size "
      f"{config.batch_size}: raise num_rats or per_rat"
    )
  render_s = time.time() - t0
  steps_per_epoch = len(train_idx) // config.batch_size
  total = steps_per_epoch * config.num_epochs
  model = make_model(config)
  init, train_step, predict = make_steps(config, model, total)
  state = init(jax.random.key(config.seed))
  ckpt_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
  mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(max_to_keep=1))
  start_epoch = 0
  epochs_path = os.path.join(workdir, EPOCHS_JSON)
  epochs = []  # the training metrics of every epoch
  if mngr.latest_step() is not None:
    state = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(state))
    start_epoch = int(state.step) // max(1, steps_per_epoch)
    if os.path.exists(epochs_path):
      with open(epochs_path, encoding="utf-8") as f:
        epochs = json.load(f)[:start_epoch]  # written before the checkpoint: may hold one more
    log.info("pretrain: resumed after epoch %d of %d", start_epoch, config.num_epochs)
  bar = tqdm(
    total=total,
    initial=start_epoch * steps_per_epoch,
    desc="pretrain",
    unit="step",
    disable=None if config.progress is None else not config.progress,
  )
  t1 = time.time()
  for epoch in range(start_epoch, config.num_epochs):
    t_epoch = time.time()
    rng = np.random.default_rng([config.seed, epoch])  # the epoch's order and augmentation
    order = rng.permutation(train_idx)
    sums = {}
    for b in range(steps_per_epoch):
      idx = np.sort(order[b * config.batch_size : (b + 1) * config.batch_size])
      images, pose = augment(pool["images"][idx], pool["pose"][idx], config.image_size, rng)
      identity = pool["rat"][idx] - config.first_rat
      state, m = train_step(state, images, pose, identity)
      for k, v in m.items():
        sums[k] = sums.get(k, 0.0) + v
      bar.update(1)
    metrics = {k: float(v) / steps_per_epoch for k, v in sums.items()}
    if not all(np.isfinite(v) for v in metrics.values()):
      raise FloatingPointError(f"pretrain epoch {epoch + 1}: non-finite {metrics}")
    log.info("pretrain epoch %d/%d: %s", epoch + 1, config.num_epochs, metrics)
    epochs.append(dict(metrics, seconds=round(time.time() - t_epoch, 1)))
    layout.write_json(epochs_path, epochs)
    mngr.save(int(state.step), args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
  bar.close()
  mngr.close()
  train_s = time.time() - t1
  results = {
    "config": json.loads(config.to_json_best_effort()),
    "pool": {"rats": int(config.num_rats), "images": int(len(pool["rat"]))},
    "train_images": int(len(train_idx)),
    "last_epoch": epochs[-1] if epochs else {},  # {}: epochs trained before epochs.json existed
    "epochs": epochs,
    # None: val_per_rat 0, every image trained on
    "held_out": evaluate(predict, state, pool, val_idx, config) if len(val_idx) else None,
    "leak_check": leak_check(pool),
    "seconds": {
      "render_and_load": round(render_s, 1),
      "train_this_call": round(train_s, 1),
      # every epoch's, whichever call trained it (None: epochs from before they were timed)
      "train_all_epochs": round(sum(e["seconds"] for e in epochs), 1)
      if all("seconds" in e for e in epochs)
      else None,
    },
    "output": os.path.abspath(output),
  }
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  state_dict = pretrained.variables_to_state_dict(jax.device_get(variables), model)
  meta = {
    "painseeker_pretrain": "synthetic-rat pool: head pose + identity (issue #21)",
    "fc_outputs": f"3 pose (yaw, pitch, roll / {POSE_SCALE:g} deg) + {config.num_rats} identities",
    "config": json.dumps(results["config"], sort_keys=True),
  }
  pretrained.save_state_dict(output, state_dict, meta)
  # The machine and code that made the trunk (another CPU kind trains another trunk), and the
  # file's digest, which every run fine-tuned from it records (`pretrained.fingerprint`).
  results["provenance"] = dict(loro.provenance(), trunk=pretrained.fingerprint(output))
  layout.write_json(os.path.join(workdir, RESULTS_JSON), results)
  return results
