"""Builds the RatsPain data set without TensorFlow.

  python -m tfds_ratspain build --config=synthetic
  python -m tfds_ratspain build --config=real --manual_dir=DIR [--data_dir=DIR]
  python -m tfds_ratspain build-grimace --scale=rgs --manual_dir=DIR [--data_dir=DIR]

Same options as the stock `tfds build tfds_ratspain/ratspain`, written as
array_record (readable with `tfds.data_source`, no TensorFlow needed), as the
stock command also does unless given --file_format. A build in another
format (e.g. TFRecord) is reported; --overwrite replaces it.

`build-grimace` builds `grimace/<scale>` from a lab's own scored images
(labels.csv + images/, see tfds_ratspain/grimace/README.md); a build made
from another state of the directory is reported, --overwrite replaces it.
"""

import argparse
import sys

from tfds_ratspain import build
from tfds_ratspain.grimace import build as grimace_build


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
    "--overwrite", action="store_true", help="delete an existing build first (e.g. a TFRecord one)"
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
  args = parser.parse_args(argv)
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
