r"""PainSeeker, leave-one-rat-out (LORO) over the six rats of RatsPain.

The paper's protocol (Liu et al. 2025): binary task (no pain vs. moderate +
severe), one fold per held-out rat, F1 and accuracy from TP/FP/TN/FN summed
over the folds (the "LORO" column) plus per-rat scores.

Real data (default arg, the paper protocol; needs the manually downloaded set,
see README "Real data"):

  python run.py --config=configs/loro.py --workdir=runs/loro_real

  224x224 crops of 256x256 faces, flip; batch 64; Adam lr 1e-4 with L2 weight
  decay 0.01 added to the gradient (PyTorch's `Adam(weight_decay=0.01)`, what
  the paper used); lambda 0.1, delta 0.2, K_h 5.
  Epochs: the paper gives none. 30 epochs = 30 x 14 = 420 steps per fold
  (about 950 training images per fold at batch 64). With lr 1e-4 Adam a
  ResNet-18 trunk fits 950 images within a few hundred steps, and with only
  five rats per fold, longer training mainly overfits to the training rats'
  identity. (Its wall time: README, "Wall time of the full paper protocol".)
  The paper's result and ours: README, docs/results.md.

Synthetic twin (quick start, runs anywhere, builds the twin on first use):

  python run.py --config=configs/loro.py:synthetic

  From scratch at 96 px (crops of 112 px faces; K = 3 x 3 = 9 regions), batch
  32, AdamW (decoupled weight decay 0.01) at a constant lr 1e-3, 8 epochs
  (the recipe study: tools/recipe_study.py, on the development twin
  `synthetic_dev`). Its measured runtime and scores are in the README
  ("Set-up"); compare methods over seeds (configs/table3.py).

Variants (the config is locked: a mistyped field is an error):

  --config.model.name=resnet18           # the paper's ResNet-18 baseline
  --config.loss.lambda_prsc=0            # PainSeeker w/o PRSC
  --config.optimizer.name=adamw          # decoupled weight decay (the synthetic configs' default)
  --config.optimizer.schedule=cosine     # a cosine-decaying learning rate, per fold
  --config.folds=1,2                     # only some held-out rats
  --config.model.pretrained=/path/resnet18.safetensors   # a local ImageNet trunk
  --config.model.pretrained=None         # from scratch (the synthetic configs' default)
"""

import ml_collections

# The from-scratch twin recipe (quick start, and the base of every synthetic config). The
# optimizer is AdamW (decoupled weight decay 0.01, constant lr 1e-3): chosen by the recipe study
# on the development twin (tools/recipe_study.py, docs/results.md "Recipe study"), where the
# paper's adam_l2 (L2 added to the gradient, meant for fine-tuning at lr 1e-4) generalised
# worse from scratch, with near-uniform attention (by how much: docs/results.md).
SYNTHETIC = dict(
  image_size=96,
  resize_size=112,
  num_epochs=8,
  batch_size=32,
  learning_rate=1e-3,
  optimizer="adamw",
)


def get_config(arg: str = "real") -> ml_collections.ConfigDict:
  """arg: `real` (paper protocol), `synthetic` (quick start) or `synthetic_mini` (smoke test)."""
  if arg not in ("real", "synthetic", "synthetic_mini"):
    raise ValueError(f"configs/loro.py: unknown arg {arg!r}; use real, synthetic or synthetic_mini")
  c = ml_collections.ConfigDict()
  c.name = f"loro_{arg}"
  c.experiment = (
    "loro"  # loro | table3 | sensitivity (see configs/table3.py, configs/sensitivity.py)
  )
  c.dataset = arg  # builder config of tfds_ratspain/ratspain
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data dir; None -> TFDS default
  c.manual_dir = ml_collections.config_dict.placeholder(
    str
  )  # real set; None -> <data_dir>/downloads/manual
  c.seed = 0
  c.scale = "rgs"  # the grimace scale of the AU scores: rgs (RatsPain) | mgs
  c.folds = (1, 2, 3, 4, 5, 6)  # held-out rats, one fold each

  c.image_size = 224
  c.resize_size = 256
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_epochs = 30
  c.checkpoint_every_epochs = 1

  c.model = ml_collections.ConfigDict()
  c.model.name = "painseeker"  # painseeker | resnet18 | lbp_svm
  c.model.size = "full"  # full (ResNet-18 trunk) | tiny (tests only)
  # Convolutions: auto (oneDNN's kernels on a one-device float32 CPU run when they load, else
  # XLA's) | xla | onednn; `onednn` also runs the stem's max pooling through oneDNN. Same
  # parameters and checkpoints either way; faster on the CPU (painseeker_jax/onednn_conv.py;
  # figures: benchmarks/README.md).
  c.model.conv = "auto"
  # ImageNet ResNet-18 trunk, as in the paper: "imagenet" (cache, see README), a file path, or
  # None to train from scratch (--config.model.pretrained=None).
  c.model.pretrained = ml_collections.config_dict.placeholder(str)
  if arg == "real":
    c.model.pretrained = "imagenet"

  # LBP + linear SVM baseline (config.model.name = "lbp_svm"), see painseeker_jax/lbp_svm.py.
  c.lbp = ml_collections.ConfigDict()
  c.lbp.radius = 1
  c.lbp.points = 8
  c.lbp.grid = 4  # cells per side: 4x4, 8x8 or 16x16 histograms
  c.lbp.svm_c = 1.0
  c.lbp.num_workers = 2  # feature extraction processes

  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_prsc = 0.1
  c.loss.delta = 0.2
  c.loss.k_h = 5
  # Grimace-scale AU heads on the fused feature, trained with the AU scores of the data (masked
  # where unknown): 0 = none, the paper's model (results.json gains per-AU scores when > 0).
  c.loss.lambda_au = 0.0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = (
    "adam_l2"  # adam_l2: PyTorch Adam(weight_decay) as in the paper | adamw: decoupled
  )
  c.optimizer.learning_rate = 1e-4
  c.optimizer.weight_decay = 0.01
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.schedule = "constant"  # constant | cosine (per fold, to 0 after the last step)
  c.optimizer.wd_params = "all"  # all (PyTorch's default) | kernels (no BatchNorm, no biases)

  c.input = ml_collections.ConfigDict()
  c.input.num_threads = 4  # decoding threads
  c.input.num_workers = 0  # >0: decoding processes (grain mp_prefetch)
  # Decoded training images kept in memory between a fold's epochs, MB per run (folds training
  # side by side share it; 0: decode every epoch). Same batches either way; a fold of ~950
  # faces at resize 256 takes ~190 MB. Not with num_workers > 0.
  c.input.cache_mb = 2048

  c.eval = ml_collections.ConfigDict()
  c.eval.fold_strategy = (
    "auto"  # map | vmap | auto (map on CPU, vmap elsewhere; benchmarks/eval_strategy.py)
  )

  c.dtype = "float32"  # compute dtype: float32 | bfloat16 (TPU/GPU; parameters stay float32)
  # How the folds are trained: sequential (one after another) | vmap (side by side in one
  # compiled program; same results up to float order) | auto (the faster one measured for the
  # backend: sequential on CPU; benchmarks/multi_run.py, benchmarks/README.md "Multi-run").
  c.multi_run = "auto"

  c.progress = True  # tqdm bars

  if arg in ("synthetic", "synthetic_mini"):
    # From scratch on CPU: smaller inputs, a larger learning rate, more epochs.
    c.image_size = SYNTHETIC["image_size"]
    c.resize_size = SYNTHETIC["resize_size"]
    c.num_epochs = SYNTHETIC["num_epochs"]
    c.batch_size = SYNTHETIC["batch_size"]
    c.eval_batch_size = 64
    c.optimizer.learning_rate = SYNTHETIC["learning_rate"]
    c.optimizer.name = SYNTHETIC["optimizer"]
  if arg == "synthetic_mini":
    # Smoke test: tiny trunk, 64 px (K = 2x2 = 4 regions, so K_h = 2), one epoch.
    c.image_size, c.resize_size, c.num_epochs, c.batch_size, c.eval_batch_size = 64, 72, 1, 8, 16
    c.model.size = "tiny"
    c.loss.k_h = 2
  return c
