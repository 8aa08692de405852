r"""The stand-in for ImageNet on the twin: a ResNet-18 trunk pretrained on synthetic rats (#21).

  painseeker pretrain-trunk --config=configs/pretrain.py --workdir=runs/pretrain_trunk \
      --output=models/resnet18.twin_pool.safetensors

then, for the paper's regime on the twin (a pretrained trunk fine-tuned with the paper's
recipe; the same code path as ImageNet weights):

  python run.py --config=configs/table3.py:synthetic_pretrained \
      --config.model.pretrained=models/resnet18.twin_pool.safetensors

The pool: `num_rats` x `per_rat` images of rats that are not the twin's six
(`synthetic.pool_plan`), rendered at `resize_size` and randomly cropped to `image_size` (with
flips); targets head pose and identity, never pain (painseeker_jax/pretrain.py says why and
checks it). AdamW with a cosine schedule. Rerunning the command resumes (pool shards, then the
checkpoint of the last finished epoch).

Expected runtime: 12-60 minutes on 2 CPU cores (AVX-512 / AVX2), a few minutes on a GPU. The
measured runtime and pretext figures: docs/results.md "A pretrained stand-in trunk".

`:tiny`: a few images at 48 px for the tests (seconds).
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pretrain_trunk"
  c.seed = 0
  c.num_rats = 40  # pool identities
  c.per_rat = 100  # images per rat; the last val_per_rat of each are held out
  c.val_per_rat = 10
  c.resize_size = 182  # rendered size; random crops of image_size (the paper's 256 -> 224 ratio)
  c.image_size = 160
  c.batch_size = 64
  c.num_epochs = 10
  c.optimizer = ml_collections.ConfigDict({"lr": 1e-3, "weight_decay": 0.05})
  c.loss = ml_collections.ConfigDict({"pose_weight": 1.0})
  c.conv = "auto"
  c.render_workers = 0  # 0: all CPU cores
  c.progress = ml_collections.FieldReference(None, field_type=bool)  # None: on a terminal
  if arg == "tiny":
    c.num_rats, c.per_rat, c.val_per_rat = 2, 6, 2
    c.resize_size, c.image_size, c.batch_size, c.num_epochs = 56, 48, 4, 2
    c.render_workers = 1
    c.progress = False
  elif arg:
    raise ValueError(f"configs/pretrain.py:{arg}: use no argument or :tiny")
  c.lock()
  return c
