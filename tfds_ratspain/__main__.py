"""Builds the RatsPain data set without TensorFlow.

  python -m tfds_ratspain build --config=synthetic
  python -m tfds_ratspain build --config=real --manual_dir=DIR [--data_dir=DIR]
  python -m tfds_ratspain build-grimace --scale=rgs --manual_dir=DIR [--data_dir=DIR]
  python -m tfds_ratspain write-lab-dir --out=DIR --animals=12 [--per_animal=40] [--scale=rgs]

Same options as the stock `tfds build tfds_ratspain/ratspain`, written as
array_record (readable with `tfds.data_source`, no TensorFlow needed), as the
stock command also does unless given --file_format. A build in another
format (e.g. TFRecord) is reported; --overwrite replaces it.

`build-grimace` builds `grimace/<scale>` from a lab's own scored images
(labels.csv + images/, see tfds_ratspain/grimace/README.md); a build made
from another state of the directory is reported, --overwrite replaces it.

`write-lab-dir` writes a made-up lab directory of N rats drawn by the synthetic
twin (tfds_ratspain/grimace/twin_lab_dir.py), to try the leave-one-animal-out
workflow without a lab's data.
"""

import argparse
import sys

from tfds_ratspain import build
from tfds_ratspain.grimace import build as grimace_build
from tfds_ratspain.grimace import twin_lab_dir


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m tfds_ratspain",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)
  b = sub.add_parser("build", help="download_and_prepare one builder config")
  b.add_argument("--config", default="synthetic", choices=build.CONFIG_NAMES)
  b.add_argument(
    "--data_dir",
    default=None,
    help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
  )
  b.add_argument("--manual_dir", default=None, help="where the real set lies (config real)")
  b.add_argument(
    "--overwrite",
    action="store_true",
    help="rebuild over an existing build (e.g. a TFRecord one); kept if the rebuild fails",
  )
  g = sub.add_parser(
    "build-grimace", help="build grimace/<scale> from a lab's labels.csv + images/"
  )
  g.add_argument(
    "--scale", required=True, choices=grimace_build.SCALES, help="rgs (rat), mgs (mouse)"
  )
  g.add_argument("--manual_dir", required=True, help="the lab's directory (labels.csv + images/)")
  g.add_argument(
    "--data_dir",
    default=None,
    help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
  )
  g.add_argument(
    "--overwrite",
    action="store_true",
    help="delete an existing build first (one of another state of the directory, or TFRecord)",
  )
  w = sub.add_parser(
    "write-lab-dir",
    help="write a made-up lab directory (labels.csv + images/) of N twin rats",
    description="Renders faces of N rats with the synthetic twin's generator and writes them "
    "as a lab's grimace manual directory (tfds_ratspain/grimace/twin_lab_dir.py). rgs: the "
    "twin's four RGS action units; mgs: the same mapped onto the MGS columns, au_cheek copying "
    "au_nose (the twin draws no cheek).",
  )
  w.add_argument("--out", required=True, help="directory to write (must be absent or empty)")
  w.add_argument("--animals", type=int, required=True, help="number of rats (>= 2)")
  w.add_argument("--per_animal", type=int, default=40, help="labelled images per rat (default 40)")
  w.add_argument(
    "--scale", default="rgs", choices=tuple(twin_lab_dir.TWIN_AU), help="AU columns (default rgs)"
  )
  w.add_argument("--seed", type=int, default=0, help="the twin's seed (default 0)")
  w.add_argument(
    "--unlabelled",
    type=int,
    default=None,
    help="extra images without any score, of rats drawn at random (default: --animals)",
  )
  w.add_argument(
    "--image_size", type=int, default=256, help="image side in pixels, 32..256 (default 256)"
  )
  w.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
  args = parser.parse_args(argv)
  if args.command == "write-lab-dir":
    try:
      done = twin_lab_dir.write(
        args.out,
        args.animals,
        args.per_animal,
        scale=args.scale,
        seed=args.seed,
        unlabelled=args.unlabelled,
        image_size=args.image_size,
        overwrite=args.overwrite,
      )
    except (ValueError, FileExistsError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    ids = done["animals"]
    print(
      f"wrote {done['out']}: {len(ids)} animals ({ids[0]}..{ids[-1]}), {done['labelled']} "
      f"labelled and {done['unlabelled']} unlabelled images; build it with\n"
      f"    python -m tfds_ratspain build-grimace --scale={done['scale']} "
      f"--manual_dir={done['out']}"
    )
    return 0
  try:
    if args.command == "build-grimace":
      path = grimace_build.prepare(
        args.scale, args.manual_dir, data_dir=args.data_dir, overwrite=args.overwrite
      )
      name = f"grimace/{args.scale}"
    else:
      path = build.prepare(
        args.config, data_dir=args.data_dir, manual_dir=args.manual_dir, overwrite=args.overwrite
      )
      name = f"ratspain/{args.config}"
  except build.DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{name} is ready in {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
