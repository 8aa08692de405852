"""The outputs of `painseeker predict`: the CSV, heat maps, time-course plots, the summary.

`Report` receives the rows of a run in input order (`Item`s made by
predict.py: one per image or sampled frame and animal, skipped rows, error rows,
end-of-video markers), writes them to the CSV, draws a heat-map PNG per scored
image when asked, a p_pain-over-time plot per video and animal at the end of each
video, and prints the console summary. The CSV is written to
`<output>.partial` (`partial_path`), flushed after every batch, and renamed over
the output by `finish()`: a crash keeps the rows done in the partial file (and
says where it is) and leaves an earlier output as it was. Heat maps, plots and
summaries are each written to a temporary name and renamed. `finish()` writes
the session summary of every video and animal (`<output stem>_summary.csv` and
`.md`): frames sampled, scored and skipped by reason, errors (a video-level
error, e.g. decoding failing part-way, counts in every animal of its video),
mean p_pain with a 95% block-bootstrap interval over time
(`stats.block_bootstrap_mean_ci`), the share of scored time predicted in pain and
the AU means. Skipped rows (`skipped`: no_face, blurred, dark; for images also
not_in_boxes, an image that no row of the --boxes image CSV names) are not
errors and count in no mean. For a model with
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

from painseeker_jax import layout

CSV_FIELDS = [
  "path",
  "frame",
  "time_s",
  "animal",
  "p_pain",
  "label",
  "skipped",
  "error",
  "box_x",
  "box_y",
  "box_w",
  "box_h",
  "sharpness",
  "exposure",
]
# Why a video frame is skipped (the session summary's columns), and any row.
FRAME_SKIP_REASONS = ("no_face", "blurred", "dark")
SKIP_REASONS = (*FRAME_SKIP_REASONS, "not_in_boxes")
SUMMARY_FIELDS = [
  "video",
  "animal",
  "frames_sampled",
  "frames_scored",
  *(f"skipped_{r}" for r in FRAME_SKIP_REASONS),
  "errors",
  "mean_p_pain",
  "ci95_low",
  "ci95_high",
  "block_samples",
  "block_seconds",
  "share_pain",
]
GRIMACE_FIELD = "grimace_score"
HEATMAP_DISPLAY_SIZE = 224
THRESHOLD = 0.5


class Item:
  """One CSV row on its way out; `image` is None for error rows, `row` None for an
  end-of-video marker (`video_end` names the video)."""

  __slots__ = ("row", "image", "video_end")

  def __init__(self, row: dict | None, image=None, video_end: str | None = None):
    self.row, self.image, self.video_end = row, image, video_end


def new_row(path, frame="", time_s="", error="", animal="") -> dict:
  """A CSV row of an input (an image, a video frame and animal, or an error) before scoring."""
  return {
    "path": path,
    "frame": frame,
    "time_s": "" if time_s == "" else f"{time_s:.6f}",
    "animal": animal,
    "p_pain": "",
    "label": "",
    "skipped": "",
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


def _output_prefix(output: str) -> tuple[str, str]:
  out = os.path.abspath(output)
  return os.path.dirname(out), os.path.basename(os.path.splitext(out)[0])


def plot_paths(output: str, sessions: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
  """The time-course PNG of each (video, animal): `<output stem>_<video stem>[_<animal>]_p_pain.png`
  next to the CSV (no animal part when the animal is "", a single-animal video)."""
  out_dir, prefix = _output_prefix(output)
  used: set[str] = set()
  out = {}
  for video, animal in sessions:
    stem = f"{prefix}_{file_stem(video)}" + (f"_{file_stem(animal)}" if animal else "")
    out[(video, animal)] = os.path.join(out_dir, unique_name(f"{stem}_p_pain", used))
  return out


def partial_path(output: str) -> str:
  """Where the CSV is written until the run finishes: `<output>.partial`, next to it."""
  return os.path.abspath(output) + ".partial"


def summary_paths(output: str) -> tuple[str, str]:
  """The session summary next to the CSV: `<output stem>_summary.csv` and `_summary.md`."""
  out_dir, prefix = _output_prefix(output)
  return (
    os.path.join(out_dir, f"{prefix}_summary.csv"),
    os.path.join(out_dir, f"{prefix}_summary.md"),
  )


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


def sampling_interval(times: Sequence[float]) -> float:
  """The median step between consecutive sample times (1.0 for fewer than two samples)."""
  t = np.sort(np.asarray(times, np.float64))
  steps = np.diff(t)
  steps = steps[steps > 0]
  return float(np.median(steps)) if steps.size else 1.0


def _stretches(times: Sequence[float], step: float) -> list[tuple[float, float]]:
  """Runs of sample times no more than 1.5 steps apart -> (start - step/2, end + step/2)."""
  out: list[tuple[float, float]] = []
  for t in sorted(times):
    if out and t - out[-1][1] <= 1.5 * step - step / 2:
      out[-1] = (out[-1][0], t + step / 2)
    else:
      out.append((t - step / 2, t + step / 2))
  return out


def plot_time_course(
  path: str,
  title: str,
  times: Sequence[float],
  p: Sequence[float],
  ensemble: bool = False,
  skipped_times: Sequence[float] = (),
  mean_ci: tuple[float, float, float] | None = None,
) -> None:
  """PNG: p_pain per scored frame (dots), a centred moving average over time, the session mean
  with its 95% interval (`mean_ci` = (mean, low, high): a line and a band) and the stretches
  of skipped frames (no face, blurred, dark) shaded grey. Written to a temporary name, then
  renamed."""
  from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

  fig = Figure(figsize=(9, 3.2), dpi=100)
  ax = fig.add_subplot()
  window = max(3, min(15, len(p) // 10 * 2 + 1))
  step = sampling_interval([*times, *skipped_times])
  for i, (a, b) in enumerate(_stretches(skipped_times, step)):
    ax.axvspan(a, b, color="0.85", lw=0, label="skipped frames" if i == 0 else None)
  if mean_ci is not None:
    mean, lo, hi = mean_ci
    ax.axhspan(lo, hi, color="C0", alpha=0.18, lw=0, label=f"mean {mean:.2f}, 95% CI")
    ax.axhline(mean, color="C0", lw=1)
  ax.plot(times, p, ".", color="0.45", ms=4, label="p_pain per frame")
  if len(p) > 1:
    ax.plot(
      times, smooth(p, window), "-", color="C3", lw=2, label=f"moving average of {window} samples"
    )
  ax.axhline(THRESHOLD, color="0.3", ls="--", lw=0.8, label="threshold 0.5")
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlabel("time (s)")
  ax.set_ylabel("p_pain" + (" (ensemble mean)" if ensemble else ""))
  ax.set_title(title, fontsize=10)
  ax.legend(loc="upper right", fontsize=7)
  fig.tight_layout()
  with layout.replacing(path) as tmp:
    fig.savefig(tmp)


# ---------------------------------------------------------------------------
# The report of a run.


def _session_key(row: dict) -> tuple[str, str]:
  """The (video, animal) session of a row (animal "" for a video scored without animals)."""
  return row["path"], row.get("animal", "")


class _Session:
  """What the report keeps of one video and animal for its plot and summary line."""

  def __init__(self):
    self.times: list[float] = []
    self.p: list[float] = []
    self.au: list[np.ndarray] = []
    self.skipped: dict[str, list[float]] = {r: [] for r in FRAME_SKIP_REASONS}
    self.errors = 0
    self._ci: tuple[int, tuple[float, float, float, int]] | None = None

  def mean_ci(self) -> tuple[float, float, float, int]:
    """(mean p_pain, 95% CI low, high, block length in samples); block bootstrap over time.
    Computed once per state of `p` (the plot and the summary share it)."""
    from painseeker_jax import stats

    if self._ci is None or self._ci[0] != len(self.p):
      block = stats.block_length(self.p)
      lo, hi = stats.block_bootstrap_mean_ci(self.p, block=block)
      self._ci = len(self.p), (float(np.mean(self.p)), lo, hi, block)
    return self._ci[1]


class Report:
  """Writes the outputs of one run; `finish()` it when all rows are written, `close()` it
  (also after a crash), then `summary()`.

  Opening creates the partial CSV (`partial_path`; refusing an existing one unless
  `overwrite`) and writes its header; `finish()` renames it over `output` (refusing to
  replace an output that appeared meanwhile unless `overwrite`); `close()` without
  `finish()` leaves it there and says so on `err`. `plots` maps each (video, animal)
  to its time-course PNG (animal "" for a video scored without animals); `class_names`
  gives the label of p_pain <= / > `THRESHOLD`; `au_names` the AU columns (empty: none,
  and no `grimace_score`); `total` sizes the progress bar (`progress`: None shows it
  only on a terminal).
  """

  def __init__(
    self,
    output: str,
    *,
    overwrite: bool,
    heatmaps: str | None,
    plots: dict[tuple[str, str], str],
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
    self.overwrite, self.partial = overwrite, partial_path(output)
    self._finished = False
    self.class_names, self.ensemble = class_names, ensemble
    self.out, self.err = out, err
    self.au_names = tuple(au_names)
    self.fields = CSV_FIELDS + (["heatmap"] if heatmaps else [])
    if self.au_names:
      self.fields += [*self.au_names, GRIMACE_FIELD]
    self.num_scored = self.num_frames = self.num_errors = self.num_pain = 0
    self.num_skipped = dict.fromkeys(SKIP_REASONS, 0)
    self.sum_p = self.sum_grimace = 0.0
    self.sessions: dict[tuple[str, str], _Session] = {}  # (video, animal), in input order
    self.summary_files: tuple[str, str] | None = None
    self.plotted: set[tuple[str, str]] = set()  # the sessions whose plot this run drew
    self._heat_names: set[str] = set()
    if heatmaps:
      os.makedirs(heatmaps, exist_ok=True)
    self._t_start = time.time()
    self._file = open(self.partial, "w" if overwrite else "x", encoding="utf-8", newline="")
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

  def _session(self, key: tuple[str, str]) -> _Session:
    return self.sessions.setdefault(key, _Session())

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
        if row.get("animal"):
          where += f", animal {row['animal']}"
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
        session = self._session(_session_key(row))
        session.times.append(float(row["time_s"]))
        session.p.append(pj)
        if au_j is not None:
          session.au.append(au_j)
      if self.heatmaps and beta is not None:
        stem = file_stem(row["path"])
        if row["frame"] != "":
          stem += f"_f{int(row['frame']):06d}"
        if row.get("animal"):
          stem += f"_{file_stem(row['animal'])}"
        name = unique_name(stem, self._heat_names)
        path = os.path.join(self.heatmaps, name)
        with layout.replacing(path) as tmp:
          heatmap_overlay(it.image, beta[j], pj, label).save(tmp)
        row["heatmap"] = name
    self._bar.update(len(items))

  def write(self, items: Sequence[Item]) -> None:
    """Writes rows (scored, skipped or errors) in order, draws the plots of each ended
    video, then flushes the CSV."""
    for it in items:
      if it.video_end is not None:
        self._plot(it.video_end)
        continue
      row = it.row
      if row["error"]:
        self.num_errors += 1
        self._bar.write(f"error: {row['error']}", file=self.err)
        for key in self._error_sessions(row):
          self._session(key).errors += 1
      elif row.get("skipped"):
        self.num_skipped[row["skipped"]] += 1
        self._bar.update(1)
        if row["frame"] != "":
          self._session(_session_key(row)).skipped[row["skipped"]].append(float(row["time_s"]))
      self._csv.writerow({k: row.get(k, "") for k in self.fields})
    self._file.flush()

  def _error_sessions(self, row) -> list[tuple[str, str]]:
    """The (video, animal) sessions an error row counts in: its frame's animal; for an error
    of the whole video (no frame, no animal: it failed to decode part-way, its tracking file
    does not fit) every animal of that video; none for an image."""
    key = _session_key(row)
    if row["frame"] != "" or key in self.plots:
      return [key]
    if not key[1]:
      return [k for k in self.plots if k[0] == key[0]]
    return []

  def _plot(self, video: str) -> None:
    for (v, animal), session in self.sessions.items():
      if v != video or (v, animal) not in self.plots or not session.times:
        continue
      mean, lo, hi, _ = session.mean_ci()
      skipped = sorted(t for ts in session.skipped.values() for t in ts)
      title = video + (f", animal {animal}" if animal else "")
      plot_time_course(
        self.plots[(v, animal)],
        title,
        session.times,
        session.p,
        self.ensemble,
        skipped_times=skipped,
        mean_ci=(mean, lo, hi),
      )
      self.plotted.add((v, animal))

  def session_rows(self) -> list[dict]:
    """One summary row per video and animal (SUMMARY_FIELDS, then the AU means)."""
    rows = []
    for (video, animal), s in self.sessions.items():
      n_skipped = {r: len(s.skipped[r]) for r in FRAME_SKIP_REASONS}
      row = {
        "video": video,
        "animal": animal,
        "frames_sampled": len(s.p) + sum(n_skipped.values()) + s.errors,
        "frames_scored": len(s.p),
        **{f"skipped_{r}": n for r, n in n_skipped.items()},
        "errors": s.errors,
      }
      if s.p:
        mean, lo, hi, block = s.mean_ci()
        step = sampling_interval(s.times)
        row.update(
          mean_p_pain=f"{mean:.4f}",
          ci95_low=f"{lo:.4f}",
          ci95_high=f"{hi:.4f}",
          block_samples=block,
          block_seconds=f"{block * step:.1f}",
          share_pain=f"{np.mean(np.asarray(s.p) > THRESHOLD):.4f}",
        )
        if s.au:
          au = np.mean(np.stack(s.au), axis=0)
          row.update({f"mean_{n}": f"{v:.4f}" for n, v in zip(self.au_names, au)})
          row[f"mean_{GRIMACE_FIELD}"] = f"{float(au.mean()):.4f}"
      rows.append(row)
    return rows

  def finish(self) -> None:
    """Puts the CSV in place (the partial file closed and renamed over the output), then
    writes the session summary (CSV and markdown, each to a temporary name, then renamed)
    when the run scored videos. Raises FileExistsError, keeping the partial file, when the
    output appeared during the run and `overwrite` is off."""
    self._file.close()
    if not self.overwrite and os.path.lexists(self.output):
      raise FileExistsError(
        f"{self.output} was created by something else during the run; not replaced (no "
        f"--overwrite). The rows of this run are in {self.partial}"
      )
    os.replace(self.partial, self.output)
    self._finished = True
    rows = self.session_rows()
    self._remove_stale(summary=not rows)
    if not rows:
      return
    fields = SUMMARY_FIELDS
    if self.au_names:
      fields = fields + [f"mean_{n}" for n in (*self.au_names, GRIMACE_FIELD)]
    path_csv, path_md = summary_paths(self.output)
    with layout.replacing(path_csv) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
      w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
      w.writeheader()
      for row in rows:
        w.writerow({k: row.get(k, "") for k in fields})
    layout.write_atomic(path_md, self._markdown(rows, fields))
    self.summary_files = (path_csv, path_md)

  def _markdown(self, rows: list[dict], fields: list[str]) -> str:
    lines = [
      f"# painseeker predict: session summary of {os.path.basename(self.output)}",
      "",
      f"Rows: {self.output}. p_pain > {THRESHOLD} counts as pain. The 95% interval of the "
      "mean is a moving-block bootstrap over time (2,000 resamples, seed 0; the block is "
      "twice the lag where the autocorrelation of p_pain dies out, at least n^(1/3) samples); "
      "skipped frames (no face, blurred, dark) and errors count in no mean.",
      "",
    ]
    for row in rows:
      title = row["video"] + (f", animal {row['animal']}" if row["animal"] else "")
      skipped = ", ".join(f"{r} {row[f'skipped_{r}']}" for r in FRAME_SKIP_REASONS)
      lines += [f"## {title}", ""]
      lines.append(
        f"- frames sampled {row['frames_sampled']}, scored {row['frames_scored']}; "
        f"skipped: {skipped}; errors {row['errors']}"
      )
      if row.get("mean_p_pain"):
        lines.append(
          f"- mean p_pain **{row['mean_p_pain']}** (95% CI {row['ci95_low']} to "
          f"{row['ci95_high']}; blocks of {row['block_samples']} samples = "
          f"{row['block_seconds']} s)"
        )
        share = float(row["share_pain"])
        lines.append(f"- share of scored time predicted in pain: {100 * share:.1f}%")
        aus = [f for f in fields if f.startswith("mean_") and f != "mean_p_pain"]
        if aus:
          lines.append("- AU means (0..2): " + ", ".join(f"{f[5:]} {row.get(f, '')}" for f in aus))
      else:
        lines.append("- no frame scored")
      key = (row["video"], row["animal"])
      if key in self.plotted:
        lines.append(f"- time course: {os.path.basename(self.plots[key])}")
      lines.append("")
    return "\n".join(lines)

  def _remove_stale(self, summary: bool) -> None:
    """Removes the plots this run would have drawn but did not (a session with no frame
    scored) and, with `summary` (the run scored no video), the session summary: left from
    an earlier run under the same names (only with `overwrite`; without it the run refused
    to start), they would read as this run's."""
    stale = [p for k, p in self.plots.items() if k not in self.plotted]
    if summary:
      stale += summary_paths(self.output)
    for path in stale:
      if os.path.lexists(path):
        os.remove(path)

  def close(self) -> None:
    """Closes the progress bar and the CSV; without `finish()` (a crash, an interrupt) says
    on `err` where the rows done are and that the output was left as it was."""
    self._bar.close()
    self._file.close()
    if not self._finished:
      left = "left as it was" if os.path.lexists(self.output) else "not written"
      print(
        f"painseeker predict: stopped before the end; the rows done so far are in "
        f"{self.partial} ({self.output} {left})",
        file=self.err,
      )

  def summary(self) -> int:
    """Prints what was done (stdout; failed inputs on stderr); returns the exit status
    (0 ok, 1 some input failed)."""
    out = self.out
    seconds = time.time() - self._t_start
    n, frames = self.num_scored, self.num_frames
    videos = sorted({v for v, _ in self.sessions})
    parts = [f"{n - frames} image(s)"] if n - frames or not videos else []
    if videos:
      parts.append(f"{frames} frame(s) of {len(videos)} video(s)")
    print(
      f"painseeker predict: scored {', '.join(parts)} in {seconds:.1f} s; "
      f"{self.num_errors} error(s)",
      file=out,
    )
    if sum(self.num_skipped.values()):
      skipped = ", ".join(f"{r} {k}" for r, k in self.num_skipped.items() if k)
      print(f"  skipped (not scored, in no mean): {skipped}", file=out)
    if self.num_skipped["not_in_boxes"]:
      print(
        f"  not_in_boxes: {self.num_skipped['not_in_boxes']} input image(s) have no row in the "
        "--boxes image CSV; check that its `image` paths name these files",
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
    if self.summary_files:
      print(f"  session summary: {self.summary_files[0]}, {self.summary_files[1]}", file=out)
    if self.heatmaps:
      print(f"  heat maps: {self.heatmaps}", file=out)
    for (v, animal), plot in self.plots.items():
      if (v, animal) in self.plotted:
        who = f"{v}" + (f", animal {animal}" if animal else "")
        print(f"  time course of {who}: {plot}", file=out)
    if self.num_errors:
      print(
        f"painseeker predict: {self.num_errors} input(s) failed; see the error column of "
        f"{self.output}",
        file=self.err,
      )
      return 1
    return 0
