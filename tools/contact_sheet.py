"""Writes a PNG contact sheet of the synthetic RatsPain twin.

Rows are the pain levels (no pain / moderate / severe, plus low confidence),
columns are head-yaw bins; each cell shows a few examples from the plan with
their AU scores (orbital, ear, nose, whisker) and yaw.

  python tools/contact_sheet.py docs/synthetic_contact_sheet.png [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfds_ratspain.ratspain import synthetic  # noqa: E402

YAW_BINS = ((-90, -45), (-45, -15), (-15, 15), (15, 45), (45, 90))
ROWS = ((0, "no pain (0)"), (1, "moderate (1)"), (2, "severe (2)"), (-1, "low confidence"))


def build_sheet(
  seed: int = 0, per_cell: int = 2, thumb: int = 120, max_colors: int | None = 256
) -> Image.Image:
  specs = synthetic.plan(seed)
  font = ImageFont.load_default()
  label_w, head_h, cap_h, pad = 112, 44, 14, 4
  cell_w = per_cell * (thumb + pad)
  width = label_w + len(YAW_BINS) * cell_w + pad
  height = head_h + len(ROWS) * (thumb + cap_h + pad) + pad
  sheet = Image.new("RGB", (width, height), (250, 250, 250))
  draw = ImageDraw.Draw(sheet)
  draw.text((4, 4), f"synthetic RatsPain twin (seed {seed})", fill=(0, 0, 0), font=font)
  draw.text(
    (300, 4),
    "rows: pain level; columns: head yaw (deg); caption: AU scores orbital,ear,nose,whisker | yaw",
    fill=(80, 80, 80),
    font=font,
  )
  for j, (lo, hi) in enumerate(YAW_BINS):
    x = label_w + j * cell_w
    name = (
      f"yaw {lo}..{hi}"
      if abs(lo) < 90 and abs(hi) < 90
      else (f"yaw < {hi}" if lo <= -90 else f"yaw >= {lo}")
    )
    draw.text((x + 4, 24), name, fill=(0, 0, 0), font=font)
    draw.line([(x - 2, head_h - 4), (x - 2, height)], fill=(200, 200, 200))
  for i, (level, row_name) in enumerate(ROWS):
    y = head_h + i * (thumb + cap_h + pad)
    draw.text((4, y + thumb // 2 - 6), row_name, fill=(0, 0, 0), font=font)
    for j, (lo, hi) in enumerate(YAW_BINS):
      cell = [s for s in specs if s.pain_level == level and lo <= s.head_pose[0] < hi][:per_cell]
      x = label_w + j * cell_w
      if not cell:
        draw.text((x + 4, y + thumb // 2 - 6), "(none in plan)", fill=(150, 150, 150), font=font)
      for k, spec in enumerate(cell):
        ex = synthetic.render(spec)
        im = (
          Image.open(io.BytesIO(ex["image"])).convert("RGB").resize((thumb, thumb), Image.LANCZOS)
        )
        xx = x + k * (thumb + pad)
        sheet.paste(im, (xx, y))
        cap = "".join(str(a) for a in spec.au_scores) + f" | {spec.head_pose[0]:+.0f}"
        draw.text((xx + 2, y + thumb + 1), cap, fill=(0, 0, 0), font=font)
  if max_colors:
    sheet = sheet.quantize(
      colors=max_colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
    )
  return sheet


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("output", help="PNG path to write")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--per-cell", type=int, default=2)
  parser.add_argument("--thumb", type=int, default=120, help="thumbnail size in pixels")
  parser.add_argument(
    "--colors", type=int, default=256, help="palette size (keeps the PNG small); 0 = full RGB"
  )
  args = parser.parse_args(argv)
  sheet = build_sheet(args.seed, args.per_cell, args.thumb, args.colors or None)
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  sheet.save(args.output, optimize=True)
  print(
    f"wrote {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB, "
    f"{sheet.size[0]}x{sheet.size[1]})"
  )


if __name__ == "__main__":
  main()
