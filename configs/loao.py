r"""PainSeeker, leave-one-animal-out (LOAO) on a lab's own grimace-scored images.

One fold per animal of the lab's directory (labels.csv + images/, see
tfds_ratspain/grimace/README.md), built on first use into the TFDS builder
`grimace/<scale>`; the arg is the scale, `rgs` (rats, the default) or `mgs`
(mice):

  python run.py --config=configs/loao.py --config.manual_dir=DIR
  python run.py --config=configs/loao.py:mgs --config.manual_dir=DIR
  python run.py --config=configs/loao.py --config.manual_dir=DIR --config.scale=mgs

The recipe is configs/loro.py's synthetic one (from scratch at 96 px, crops of
112 px faces, batch 32, 8 epochs, its optimizer and learning rate) with the
grimace AU heads on (`loss.lambda_au = 1.0`: results.json and predictions.csv
gain per-AU scores). lambda_au = 1.0 was chosen among 0.3, 1 and 3 on a
development lab directory (twin seed 1, six rats) by a rule fixed before the
runs: tools/lambda_au_study.py.
Runtime: minutes for a few animals on 2 CPU cores, growing with the number of
animals and images (one fold per animal, each trained on the images of all the
others). Measured: docs/results.md ("The AU heads' weight for configs/loao.py").

Outputs as for configs/loro.py (README, "What a run writes"), with the animals
in place of the rats: results.json `per_animal` (keyed by the animal ids of
labels.csv) and the pooled `loao`, predictions.csv with `animal_id`, `session`
and `condition` columns, one `fold_animal_<id>/` per animal.

Variants (the usual overrides of configs/loro.py work):

  --config.folds=R01,R03                 # only some held-out animals (ids as in labels.csv)
  --config.model.size=full --config.image_size=224 --config.resize_size=256
  --config.num_epochs=30
  --config.loss.lambda_au=0              # the paper's model, no AU heads

The model on every animal, for `painseeker predict`:

  painseeker train-final --config=configs/loao.py --config.manual_dir=DIR --output=MODEL
"""

import ml_collections

from configs import loro


def get_config(arg: str = "rgs") -> ml_collections.ConfigDict:
  """arg: the grimace scale of the lab's data, `rgs` (Rat Grimace Scale) or `mgs` (Mouse)."""
  if arg not in ("rgs", "mgs"):
    raise ValueError(f"configs/loao.py: unknown arg {arg!r}; use rgs or mgs")
  c = loro.get_config("synthetic")
  c.name = f"loao_{arg}"
  c.dataset = "grimace"  # a lab's manual directory, builder grimace/<scale>
  c.scale = arg
  # The lab's directory (labels.csv + images/): required, --config.manual_dir=DIR.
  c.manual_dir = ml_collections.config_dict.placeholder(str)
  c.folds = ()  # held-out animals, ids as in labels.csv; empty = every animal
  c.loss.lambda_au = 1.0  # chosen by tools/lambda_au_study.py (docs/results.md)
  return c
