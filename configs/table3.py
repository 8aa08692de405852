r"""The paper's Table 3: nine methods under one leave-one-rat-out protocol.

PainSeeker (lambda 0.1, delta 0.2, K_h 5), PainSeeker w/o PRSC (lambda 0),
ResNet-18 (global average pooling + FC, same recipe) and LBP + linear SVM
(R in {1, 3}, P = 8, grids 4x4 / 8x8 / 16x16), each over `seeds` (LBP + SVM is
deterministic and runs once), with mean ± std, bootstrap 95% CIs, paired tests
against PainSeeker, each deep method against the best LBP variant and, on the
synthetic twin, metrics per head-pose bin,
attention localisation and the attention figure (Fig. 4).

  python run.py --config=configs/table3.py:synthetic --workdir=runs/table3_synthetic
  python run.py --config=configs/table3.py:real --config.manual_dir=DIR --workdir=runs/table3_real
  python run.py --config=configs/table3.py:synthetic_pretrained  # after building its trunk
                                                                 # (configs/pretrain.py's command)

Each run is kept under <workdir>/runs/<method>/seed<k>; the runs train seed by seed (every
method at the first seed, then the next); rerunning the command skips finished runs and
resumes an interrupted one. Outputs: table3.md,
table3.json, figure4_attention.png, rewritten after every finished run (a partly filled
work directory shows its table so far and lists the missing runs).

Cost (3 deep methods x 3 seeds x 6 folds + 6 LBP runs): synthetic, nine quick-start
runs plus the LBP runs (seconds each); real (224 px, 30 epochs, pretrained trunk): GPU
minutes per run. Measured runtimes and results: docs/results.md ("Table 3 with the fitted
recipe"). --config.seeds=0 for a single-seed table; --config.methods=painseeker,resnet18 for
some methods.

Not in the paper: `painseeker_au`, PainSeeker with the grimace AU heads (loss.lambda_au 1.0,
issue #19), compared with PainSeeker like the others (pain scores, per pose bin, attention
share) and scored AU by AU (accuracy, macro-F1, QWK, MAE, with CIs):

  python run.py --config=configs/table3.py:synthetic --workdir=runs/table3_synthetic \
    --config.methods=painseeker,painseeker_au

Measured: docs/results.md ("AU supervision on the twin").
"""

from configs import loro


def get_config(arg: str = "real"):
  """arg: real, synthetic, synthetic_mini (as configs/loro.py) or synthetic_pretrained (the
  paper's regime on the twin: a trunk from `painseeker pretrain-trunk`, issue #21)."""
  c = loro.get_config("synthetic" if arg == "synthetic_pretrained" else arg)
  c.name = f"table3_{arg}"
  if arg == "synthetic_pretrained":
    # The paper's recipe (Adam with L2 0.01 at lr 1e-4, batch 64, 30 epochs) on a pretrained
    # ResNet-18 trunk, at 160 px: K = 5 x 5 = 25 regions (96 px gives 9). The trunk file is
    # what configs/pretrain.py's command writes.
    c.image_size, c.resize_size, c.batch_size, c.eval_batch_size = 160, 182, 64, 64
    c.num_epochs = 30
    c.model.size = "full"
    c.model.pretrained = "models/resnet18.twin_pool.safetensors"
    c.optimizer.name, c.optimizer.learning_rate = "adam_l2", 1e-4
    c.optimizer.weight_decay, c.optimizer.schedule, c.optimizer.wd_params = 0.01, "constant", "all"
  c.experiment = "table3"
  c.methods = (
    "painseeker",
    "painseeker_wo_prsc",
    "resnet18",
    "lbp_r1_g4",
    "lbp_r1_g8",
    "lbp_r1_g16",
    "lbp_r3_g4",
    "lbp_r3_g8",
    "lbp_r3_g16",
  )
  c.seeds = (0, 1, 2)
  c.bootstrap = 2000
  # dataset filenames to draw in Fig. 4 (default: one pain face per pose bin)
  c.attention_files = ()
  return c
