"""The outputs of `painseeker predict`: the CSV, heat maps, time-course plots, the summary.

`Report` receives the rows of a run in input order (`Item`s made by
predict.py: one per image or sampled frame, error rows, end-of-video markers),
writes them to the CSV (flushed after every batch, so a crash keeps what was
done), draws a heat-map PNG per scored image when asked, a p_pain-over-time
plot at the end of each video, and prints the console summary. For a model with
grimace-scale AU heads each row also gets, after the other columns, the expected
score (0..2) of each AU (`au_orbital`, ...: the AU names) and `grimace_score`,
their mean (the RGS/MGS convention); the summary gives its mean over the run. It
never sees the network or the decoders. No TensorFlow, no JAX.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

CSV_FIELDS = ["path", "frame", "time_s", "p_pain", "label", "error"]
GRIMACE_FIELD = "grimace_score"
HEATMAP_DISPLAY_SIZE = 224
THRESHOLD = 0.5


class Item:
  """One CSV row on its way out; `image` is None for error rows, `row` None for an
  end-of-video marker (`video_end` names the video)."""

  __slots__ = ("row", "image", "video_end")

  def __init__(self, row: dict | None, image=None, video_end: str | None = None):
    self.row, self.image, self.video_end = row, image, video_end


def new_row(path, frame="", time_s="", error="") -> dict:
  """A CSV row of an input (an image, a video frame, or an error) before scoring."""
  return {
    "path": path,
    "frame": frame,
    "time_s": "" if time_s == "" else f"{time_s:.6f}",
    "p_pain": "",
    "label": "",
    "error": error,
  }


def unique_name(stem: str, used: set[str], ext: str = ".png") -> str:
  """`stem.ext`, or `stem_2.ext`, `stem_3.ext` ... if taken; records the name in `used`."""
  name, n = f"{stem}{ext}", 2
  while name in used:
    name, n = f"{stem}_{n}{ext}", n + 1
  used.add(name)
  return name


def file_stem(path: str) -> str:
  """The file or folder name without its extension, reduced to safe characters."""
  s = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in s) or "input"


def plot_paths(output: str, videos: Sequence[str]) -> dict[str, str]:
  """The time-course PNG of each video: `<output stem>_<video stem>_p_pain.png` next to the CSV."""
  out_dir = os.path.dirname(os.path.abspath(output))
  prefix = os.path.basename(os.path.splitext(os.path.abspath(output))[0])
  used: set[str] = set()
  return {
    v: os.path.join(out_dir, unique_name(f"{prefix}_{file_stem(v)}_p_pain", used)) for v in videos
  }


# ---------------------------------------------------------------------------
# Heat maps and plots.


def heatmap_overlay(
  image: np.ndarray,
  beta: np.ndarray,
  p_pain: float,
  label: str,
  display: int = HEATMAP_DISPLAY_SIZE,
) -> Image.Image:
  """The attention map (beta over the K = s x s regions, bilinearly upsampled,
  min-max scaled per image: 1 = the most attended region) in the 'jet' colours
  blended over the model's input, with p_pain written on it."""
  from painseeker_jax import figures

  base = np.asarray(Image.fromarray(image).resize((display, display), Image.BILINEAR))
  out = Image.fromarray(figures.overlay(base, beta, alpha=0.45))
  draw = ImageDraw.Draw(out)
  text = f"p_pain {p_pain:.2f} ({label})"
  draw.rectangle((0, 0, 8 + 7 * len(text), 16), fill=(0, 0, 0))
  draw.text((4, 2), text, fill=(255, 255, 255))
  return out


def smooth(values: Sequence[float], window: int) -> np.ndarray:
  """Centred moving average (window shrinks at the ends)."""
  v = np.asarray(values, np.float64)
  if len(v) == 0:
    return v
  half = max(window, 1) // 2
  c = np.concatenate([[0.0], np.cumsum(v)])
  lo = np.maximum(np.arange(len(v)) - half, 0)
  hi = np.minimum(np.arange(len(v)) + half + 1, len(v))
  return (c[hi] - c[lo]) / (hi - lo)


def plot_time_course(
  path: str, title: str, times: Sequence[float], p: Sequence[float], ensemble: bool = False
) -> None:
  """PNG: p_pain per sampled frame (dots) and a centred moving average over time."""
  from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

  fig = Figure(figsize=(9, 3.2), dpi=100)
  ax = fig.add_subplot()
  window = max(3, min(15, len(p) // 10 * 2 + 1))
  ax.plot(times, p, ".", color="0.55", ms=4, label="p_pain per frame")
  if len(p) > 1:
    ax.plot(
      times, smooth(p, window), "-", color="C3", lw=2, label=f"moving average of {window} samples"
    )
  ax.axhline(THRESHOLD, color="0.3", ls="--", lw=0.8, label="threshold 0.5")
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlabel("time (s)")
  ax.set_ylabel("p_pain" + (" (ensemble mean)" if ensemble else ""))
  ax.set_title(title, fontsize=10)
  ax.legend(loc="upper right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)


# ---------------------------------------------------------------------------
# The report of a run.


class Report:
  """Writes the outputs of one run; `close()` it (also after a crash), then `summary()`.

  Opening creates the CSV (refusing an existing file unless `overwrite`) and
  writes its header. `plots` maps each video to its time-course PNG;
  `class_names` gives the label of p_pain <= / > `THRESHOLD`; `au_names` the
  AU columns (empty: none, and no `grimace_score`); `total` sizes the progress
  bar (`progress`: None shows it only on a terminal).
  """

  def __init__(
    self,
    output: str,
    *,
    overwrite: bool,
    heatmaps: str | None,
    plots: dict[str, str],
    class_names: Sequence[str],
    ensemble: bool,
    total: int,
    progress: bool | None,
    out,
    err,
    au_names: Sequence[str] = (),
  ):
    from tqdm.auto import tqdm

    self.output, self.heatmaps, self.plots = output, heatmaps, plots
    self.class_names, self.ensemble = class_names, ensemble
    self.out, self.err = out, err
    self.au_names = tuple(au_names)
    self.fields = CSV_FIELDS + (["heatmap"] if heatmaps else [])
    if self.au_names:
      self.fields += [*self.au_names, GRIMACE_FIELD]
    self.num_scored = self.num_frames = self.num_errors = self.num_pain = 0
    self.sum_p = self.sum_grimace = 0.0
    self.series: dict[str, tuple[list[float], list[float]]] = {}  # video -> (times, p_pain)
    self._heat_names: set[str] = set()
    if heatmaps:
      os.makedirs(heatmaps, exist_ok=True)
    self._t_start = time.time()
    self._file = open(output, "w" if overwrite else "x", encoding="utf-8", newline="")
    self._csv = csv.DictWriter(self._file, fieldnames=self.fields, lineterminator="\n")
    self._csv.writeheader()
    self._file.flush()
    self._bar = tqdm(
      total=total,
      unit="img",
      desc="predict",
      file=err,
      dynamic_ncols=True,
      disable=None if progress is None else not progress,
    )

  def add_scores(
    self,
    items: Sequence[Item],
    p: np.ndarray,
    beta: np.ndarray | None,
    au: np.ndarray | None = None,
  ) -> None:
    """Fills in the rows of a scored batch (p_pain, label, heat map, AU scores) and counts
    them.

    `p[j]`, `beta[j]` (None: no heat maps) and `au[j]` (the expected score of each AU;
    None: no AU heads) belong to `items[j]`. A non-finite p_pain (or attention map, for a
    heat map, or AU score) makes the row an error: no p_pain, no label, no heat map, no AU
    scores, not in the video's time course; the run then exits with status 1.
    """
    for j, it in enumerate(items):
      row = it.row
      pj = float(p[j])
      au_j = None if au is None or not self.au_names else np.asarray(au[j], np.float64)
      bad_beta = self.heatmaps and beta is not None and not np.isfinite(beta[j]).all()
      bad_au = au_j is not None and not np.isfinite(au_j).all()
      if not math.isfinite(pj) or bad_beta or bad_au:
        where = row["path"] if row["frame"] == "" else f"{row['path']}, frame {row['frame']}"
        what = f"p_pain = {pj}"
        if math.isfinite(pj):
          what = "the attention map holds NaN or inf" if bad_beta else "an AU score is NaN or inf"
        row["error"] = (
          f"{where}: the network's output is not finite ({what}); no score or label given"
        )
        continue
      label = self.class_names[int(pj > THRESHOLD)]
      row["p_pain"], row["label"] = f"{pj:.6f}", label
      self.num_scored += 1
      self.sum_p += pj
      self.num_pain += int(pj > THRESHOLD)
      if au_j is not None:
        for name, score in zip(self.au_names, au_j):
          row[name] = f"{score:.4f}"
        grimace = float(au_j.mean())
        row[GRIMACE_FIELD] = f"{grimace:.4f}"
        self.sum_grimace += grimace
      if row["frame"] != "":
        self.num_frames += 1
        times, ps = self.series.setdefault(row["path"], ([], []))
        times.append(float(row["time_s"]))
        ps.append(pj)
      if self.heatmaps and beta is not None:
        stem = file_stem(row["path"])
        if row["frame"] != "":
          stem += f"_f{int(row['frame']):06d}"
        name = unique_name(stem, self._heat_names)
        heatmap_overlay(it.image, beta[j], pj, label).save(os.path.join(self.heatmaps, name))
        row["heatmap"] = name
    self._bar.update(len(items))

  def write(self, items: Sequence[Item]) -> None:
    """Writes rows (all scored or errors) in order, draws the plot of each ended video,
    then flushes the CSV."""
    for it in items:
      if it.video_end is not None:
        times, ps = self.series.get(it.video_end, ([], []))
        if it.video_end in self.plots and times:
          plot_time_course(self.plots[it.video_end], it.video_end, times, ps, self.ensemble)
        continue
      row = it.row
      if row["error"]:
        self.num_errors += 1
        self._bar.write(f"error: {row['error']}", file=self.err)
      self._csv.writerow({k: row.get(k, "") for k in self.fields})
    self._file.flush()

  def close(self) -> None:
    self._bar.close()
    self._file.close()

  def summary(self) -> int:
    """Prints what was done (stdout; failed inputs on stderr); returns the exit status
    (0 ok, 1 some input failed)."""
    out = self.out
    seconds = time.time() - self._t_start
    n, frames, videos = self.num_scored, self.num_frames, sorted(self.series)
    parts = [f"{n - frames} image(s)"] if n - frames or not videos else []
    if videos:
      parts.append(f"{frames} frame(s) of {len(videos)} video(s)")
    print(
      f"painseeker predict: scored {', '.join(parts)} in {seconds:.1f} s; "
      f"{self.num_errors} error(s)",
      file=out,
    )
    if n:
      print(
        f"  mean p_pain {self.sum_p / n:.4f}; predicted pain: {self.num_pain} of {n} "
        f"({100.0 * self.num_pain / n:.1f}%), threshold {THRESHOLD}",
        file=out,
      )
      if self.au_names:
        print(
          f"  mean {GRIMACE_FIELD} {self.sum_grimace / n:.4f} (0..2, the mean expected score "
          f"of {len(self.au_names)} AUs: {', '.join(self.au_names)})",
          file=out,
        )
    print(f"  results: {self.output}", file=out)
    if self.heatmaps:
      print(f"  heat maps: {self.heatmaps}", file=out)
    for v in videos:
      if v in self.plots and os.path.exists(self.plots[v]):
        print(f"  time course of {v}: {self.plots[v]}", file=out)
    if self.num_errors:
      print(
        f"painseeker predict: {self.num_errors} input(s) failed; see the error column of "
        f"{self.output}",
        file=self.err,
      )
      return 1
    return 0
