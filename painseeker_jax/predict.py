"""`painseeker predict`: scores new face images, folders and videos.

Pipeline:
  * inputs (`collect_inputs`): files, folders (recursive), globs; images
    (JPEG, PNG, BMP, TIFF, WebP) and videos (mp4, avi, mov, mkv, ...);
  * decoding (`load_image`, `iter_video`): EXIF rotation, any PIL mode to RGB
    (`manual.to_rgb`: grayscale, RGBA, CMYK, 16-bit), the optional `--crop`
    box, then the same bilinear resize to the model's input size as the
    evaluation pipeline (`input_pipeline.decode_resize`). Video frames are read
    with PyAV (which ships its own FFmpeg) and sampled every N seconds or N
    frames. Decoding runs in background threads while the network runs;
  * inference (`make_predict_fn`): one jit-compiled function with a fixed
    batch shape (the last batch padded with zeros). An ensemble (the fold
    models of a LORO work directory) runs its members one after another
    inside that function (`lax.map`) and averages their probabilities
    (and their attention maps, for the heat maps);
  * outputs: the CSV (one row per image or sampled frame, flushed after every
    batch, so a crash keeps what was done), heat-map PNGs, one p_pain-over-time
    plot per video, a console summary.

A file that cannot be read or decoded, an empty folder or an unsupported video
gives a row with the message in the `error` column and a message on stderr;
the run goes on and exits with status 1 at the end. Nothing here imports
TensorFlow or the trainer.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import glob
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from tfds_ratspain.ratspain import manual

IMAGE_EXTENSIONS = manual.IMAGE_EXTENSIONS
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".mts", ".m2ts", ".ts", ".3gp", ".ogv")
CSV_FIELDS = ["path", "frame", "time_s", "p_pain", "label", "error"]
HEATMAP_DISPLAY_SIZE = 224
THRESHOLD = 0.5
# Decoded images may be held while the network runs: a bounded look-ahead.
_PREFETCH_BATCHES = 2


class InputError(Exception):
  """One input (a file, folder, frame) cannot be used; the message names it."""


class UsageError(Exception):
  """The run cannot start (bad option, existing output, unusable model)."""


# ---------------------------------------------------------------------------
# Inputs.


@dataclasses.dataclass
class Source:
  kind: str             # "image", "video" or "error"
  path: str
  error: str = ""
  est_frames: int = 0   # videos: expected number of sampled frames (progress bar)


def _has_magic(s: str) -> bool:
  return any(c in s for c in "*?[")


def _walk(folder: str) -> list[str]:
  out = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
  return out


def _kind(path: str) -> str | None:
  ext = os.path.splitext(path)[1].lower()
  if ext in IMAGE_EXTENSIONS:
    return "image"
  if ext in VIDEO_EXTENSIONS:
    return "video"
  return None


def collect_inputs(paths: Sequence[str]) -> list[Source]:
  """Expands files, folders (recursive) and globs into sources, in the given order.

  In folders only files with an image or video extension are taken (others
  are skipped); a file named explicitly is tried as an image unless its
  extension is a video one. Problems become `error` sources.
  """
  out: list[Source] = []
  seen: set[str] = set()

  def add(kind: str, path: str, error: str = ""):
    key = os.path.realpath(path) if kind != "error" else None
    if key is not None:
      if key in seen:
        return
      seen.add(key)
    out.append(Source(kind, path, error))

  def add_folder(folder: str):
    files = [(f, _kind(f)) for f in _walk(folder)]
    files = [(f, k) for f, k in files if k]
    if not files:
      add("error", folder, f"{folder}: empty folder: no images ({', '.join(IMAGE_EXTENSIONS)}) or "
          f"videos ({', '.join(VIDEO_EXTENSIONS)}) found in it or below it")
    for f, k in files:
      add(k, f)

  for arg in paths:
    if os.path.isdir(arg):
      add_folder(arg)
    elif os.path.lexists(arg):
      add(_kind(arg) or "image", arg)
    elif _has_magic(arg):
      matches = sorted(glob.glob(arg, recursive=True))
      if not matches:
        add("error", arg, f"{arg}: no file matches this pattern")
      for m in matches:
        if os.path.isdir(m):
          add_folder(m)
        elif _kind(m):
          add(_kind(m), m)
    else:
      add("error", arg, f"{arg}: no such file or folder")
  return out


def parse_crop(text: str) -> tuple[int, int, int, int]:
  """'x,y,w,h' (pixels, top-left corner and size) -> a tuple; raises ValueError."""
  parts = text.split(",")
  if len(parts) != 4:
    raise ValueError(f"--crop {text!r}: expected x,y,w,h (four integers)")
  try:
    x, y, w, h = (int(p) for p in parts)
  except ValueError:
    raise ValueError(f"--crop {text!r}: expected x,y,w,h (four integers)") from None
  if x < 0 or y < 0 or w <= 0 or h <= 0:
    raise ValueError(f"--crop {text!r}: x, y must be >= 0 and w, h > 0")
  return x, y, w, h


# ---------------------------------------------------------------------------
# Decoding.


def _crop_resize(img: Image.Image, size: int, crop, where: str) -> np.ndarray:
  if crop is not None:
    x, y, w, h = crop
    if x + w > img.width or y + h > img.height:
      raise InputError(f"{where}: the crop box x={x}, y={y}, w={w}, h={h} reaches outside the "
                       f"image ({img.width}x{img.height})")
    img = img.crop((x, y, x + w, y + h))
  if img.size != (size, size):
    img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
  return np.asarray(img, dtype=np.uint8)


def load_image(path: str, size: int, crop=None) -> np.ndarray:
  """An image file -> size x size x 3 uint8, as the evaluation pipeline sees it.

  EXIF rotation applied, any mode converted to RGB (16-bit scaled, alpha on
  white), the crop box (in the upright image's pixels) cut out, then resized
  (bilinear, aspect not kept; JPEGs without a crop use the decoder's
  `draft` reduction exactly like `input_pipeline.decode_resize`). Raises
  InputError naming the file.
  """
  try:
    f = open(path, "rb")
  except OSError as e:
    raise InputError(f"{path}: cannot read the file ({e.strerror or e})") from None
  try:
    with f, Image.open(f) as img:
      if crop is None:
        img.draft("RGB", (size, size))
      img = ImageOps.exif_transpose(img)
      img = manual.to_rgb(img)
      return _crop_resize(img, size, crop, path)
  except InputError:
    raise
  except UnidentifiedImageError:
    raise InputError(f"{path}: not a readable image (supported: {', '.join(IMAGE_EXTENSIONS)}; "
                     f"videos: {', '.join(VIDEO_EXTENSIONS)})") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise InputError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from None


def _av():
  import av  # PyAV ships its own FFmpeg libraries
  return av


def _open_video(path: str):
  av = _av()
  try:
    container = av.open(path)
  except FileNotFoundError:
    raise InputError(f"{path}: file not found") from None
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise InputError(f"{path}: not a readable video ({e})") from None
  if not container.streams.video:
    container.close()
    raise InputError(f"{path}: holds no video stream")
  return container


def probe_video(path: str, every_seconds: float | None, every_frames: int | None) -> int:
  """Expected number of sampled frames (for the progress bar); raises InputError."""
  container = _open_video(path)
  try:
    stream = container.streams.video[0]
    n = stream.frames
    rate = stream.average_rate or stream.guessed_rate
    duration = None
    if stream.duration is not None and stream.time_base is not None:
      duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
      duration = container.duration / 1e6
    if not n and duration and rate:
      n = int(round(duration * float(rate)))
    if every_frames:
      return max(1, math.ceil((n or 1) / every_frames))
    if duration:
      return max(1, math.ceil(duration / every_seconds))
    return max(1, n or 1)
  finally:
    container.close()


def iter_video(path: str, size: int, *, every_seconds: float | None = None,
               every_frames: int | None = None, crop=None) -> Iterator[tuple[int, float, np.ndarray]]:
  """Yields (frame index, time in seconds from the stream start, size x size x 3 uint8).

  Frames are sampled every `every_frames` decoded frames, or the first frame at
  or after each multiple of `every_seconds`. The display rotation of the
  stream (phone videos) is applied. Raises InputError naming the file (and the
  frame, if decoding fails mid-way).
  """
  if (every_seconds is None) == (every_frames is None):
    raise ValueError("give exactly one of every_seconds and every_frames")
  av = _av()
  container = _open_video(path)
  try:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or 0) or None
    start = None
    next_t = 0.0
    i = -1
    try:
      for i, frame in enumerate(container.decode(stream)):
        t = frame.time
        if t is None:
          if rate is None:
            raise InputError(f"{path}: frame {i} has no timestamp and the stream no frame rate")
          t = i / rate
        if start is None:
          start = t
        t -= start
        if every_frames:
          keep = i % every_frames == 0
        else:
          keep = t >= next_t - 1e-6
          if keep:
            next_t = (math.floor(t / every_seconds + 1e-6) + 1) * every_seconds
        if not keep:
          continue
        img = frame.to_image()
        rotation = getattr(frame, "rotation", 0) or 0
        if rotation:
          img = img.rotate(rotation, expand=True)
        yield i, float(t), _crop_resize(img, size, crop, f"{path}, frame {i}")
    except (av.error.FFmpegError, OSError, ValueError) as e:
      raise InputError(f"{path}: decoding failed after frame {i} ({e})") from None
    if i < 0:
      raise InputError(f"{path}: no frame could be decoded")
  finally:
    container.close()


# ---------------------------------------------------------------------------
# The network.


def make_predict_fn(loaded):
  """jit fn(stacked_variables, images_BxHxWx3 uint8) -> (p_B, p_FxB, beta_BxK or None).

  `stacked_variables` has a leading member axis F (1 for a model directory);
  the members run one after another (`lax.map`, the fast choice on CPU) and
  p_B / beta are their means.
  """
  import jax
  import jax.numpy as jnp

  from painseeker_jax import models

  model = loaded.model
  mean = np.asarray(loaded.mean_rgb, np.float32)
  std = np.asarray(loaded.std_rgb, np.float32)

  def one(variables, x):
    logits, beta, _ = models.forward(model, variables, x, train=False)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, 1], beta

  @jax.jit
  def fn(stacked, images):
    x = (jnp.asarray(images, jnp.float32) / 255.0 - mean) / std
    p_F, beta_F = jax.lax.map(lambda v: one(v, x), stacked)
    beta = None if beta_F is None else jnp.mean(beta_F, axis=0)
    return jnp.mean(p_F, axis=0), p_F, beta

  return fn


def stack_variables(variables: list):
  import jax
  import jax.numpy as jnp
  return jax.tree.map(lambda *xs: jnp.stack(xs), *variables)


# ---------------------------------------------------------------------------
# Heat maps and plots.


def heatmap_overlay(image: np.ndarray, beta: np.ndarray, p_pain: float, label: str,
                    display: int = HEATMAP_DISPLAY_SIZE) -> Image.Image:
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


def plot_time_course(path: str, title: str, times: Sequence[float], p: Sequence[float],
                     ensemble: bool = False) -> None:
  """PNG: p_pain per sampled frame (dots) and a centred moving average over time."""
  from matplotlib.figure import Figure  # no pyplot: no GUI backend needed

  fig = Figure(figsize=(9, 3.2), dpi=100)
  ax = fig.add_subplot()
  window = max(3, min(15, len(p) // 10 * 2 + 1))
  ax.plot(times, p, ".", color="0.55", ms=4, label="p_pain per frame")
  if len(p) > 1:
    ax.plot(times, smooth(p, window), "-", color="C3", lw=2, label=f"moving average of {window} samples")
  ax.axhline(THRESHOLD, color="0.3", ls="--", lw=0.8, label="threshold 0.5")
  ax.set_ylim(-0.02, 1.02)
  ax.set_xlabel("time (s)")
  ax.set_ylabel("p_pain" + (" (ensemble mean)" if ensemble else ""))
  ax.set_title(title, fontsize=10)
  ax.legend(loc="upper right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)


# ---------------------------------------------------------------------------
# The run.


@dataclasses.dataclass
class Options:
  model: str
  output: str
  paths: list
  heatmaps: str | None = None
  every_seconds: float | None = None
  every_frames: int | None = None
  crop: tuple | None = None
  batch_size: int = 64
  overwrite: bool = False
  num_threads: int = 4
  progress: bool | None = None  # None: only on a terminal


def _unique_name(stem: str, used: set[str], ext: str = ".png") -> str:
  name, n = f"{stem}{ext}", 2
  while name in used:
    name, n = f"{stem}_{n}{ext}", n + 1
  used.add(name)
  return name


def _stem(path: str) -> str:
  s = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in s) or "input"


class _Item:
  """One CSV row on its way out; `image` is None for error rows."""
  __slots__ = ("row", "image", "video_end")

  def __init__(self, row: dict | None, image=None, video_end: str | None = None):
    self.row, self.image, self.video_end = row, image, video_end


def _row(path, frame="", time_s="", error="") -> dict:
  return {"path": path, "frame": frame, "time_s": "" if time_s == "" else f"{time_s:.6f}",
          "p_pain": "", "label": "", "error": error}


def _bounded_map(fn, items: Iterable, num_threads: int, window: int) -> Iterator:
  """`map(fn, items)` on a thread pool, in order, at most `window` results ahead."""
  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as ex:
    pending = collections.deque()
    for x in items:
      pending.append(ex.submit(fn, x))
      if len(pending) >= window:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _items(sources: list[Source], opts: Options, size: int) -> Iterator[_Item]:
  """Rows in input order: decoded images and frames, error rows, end-of-video markers."""

  def decode(path):
    try:
      return _Item(_row(path), load_image(path, size, opts.crop))
    except InputError as e:
      return _Item(_row(path, error=str(e)))

  window = max(2 * opts.batch_size, 8)
  i = 0
  while i < len(sources):
    s = sources[i]
    if s.kind == "image":  # a run of consecutive images: decode in parallel
      j = i
      while j < len(sources) and sources[j].kind == "image":
        j += 1
      yield from _bounded_map(decode, [x.path for x in sources[i:j]], opts.num_threads, window)
      i = j
      continue
    if s.kind == "error":
      yield _Item(_row(s.path, error=s.error))
    else:
      try:
        for frame, t, image in iter_video(s.path, size, every_seconds=opts.every_seconds,
                                          every_frames=opts.every_frames, crop=opts.crop):
          yield _Item(_row(s.path, frame, t), image)
      except InputError as e:
        yield _Item(_row(s.path, error=str(e)))
      yield _Item(None, video_end=s.path)
    i += 1


def _background(gen: Iterator, maxsize: int) -> Iterator:
  """Runs `gen` in a thread (decoding overlaps the network); re-raises its errors."""
  q: queue.Queue = queue.Queue(maxsize)
  done = object()
  stop = threading.Event()

  def work():
    try:
      for x in gen:
        while not stop.is_set():
          try:
            q.put(("item", x), timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      q.put(("end", done))
    except BaseException as e:  # noqa: BLE001  handed to the consumer
      q.put(("error", e))

  t = threading.Thread(target=work, daemon=True)
  t.start()
  try:
    while True:
      kind, x = q.get()
      if kind == "end":
        return
      if kind == "error":
        raise x
      yield x
  finally:
    stop.set()


def _check_outputs(opts: Options, sources: list[Source]) -> dict[str, str]:
  """Refuses existing outputs unless --overwrite; returns the plot path of each video."""
  out_dir = os.path.dirname(os.path.abspath(opts.output))
  if os.path.isdir(opts.output):
    raise UsageError(f"--output {opts.output} is a folder; give a CSV file name")
  if os.path.exists(opts.output) and not opts.overwrite:
    raise UsageError(f"{opts.output} already exists; use --overwrite to replace it")
  if not os.path.isdir(out_dir):
    raise UsageError(f"{out_dir}: the folder for --output does not exist")
  if opts.heatmaps:
    if os.path.exists(opts.heatmaps) and not os.path.isdir(opts.heatmaps):
      raise UsageError(f"--heatmaps {opts.heatmaps} is a file; give a folder")
    if os.path.isdir(opts.heatmaps) and os.listdir(opts.heatmaps) and not opts.overwrite:
      raise UsageError(f"{opts.heatmaps} already holds files; use --overwrite to write into it "
                       "(files of the same name are replaced) or choose an empty folder")
  used: set[str] = set()
  prefix = os.path.splitext(os.path.abspath(opts.output))[0]
  plots = {}
  for s in sources:
    if s.kind == "video":
      name = _unique_name(f"{os.path.basename(prefix)}_{_stem(s.path)}_p_pain", used)
      plots[s.path] = os.path.join(out_dir, name)
      if os.path.exists(plots[s.path]) and not opts.overwrite:
        raise UsageError(f"{plots[s.path]} (the plot of {s.path}) already exists; use --overwrite "
                         "to replace it")
  return plots


def run(opts: Options, loaded=None, out=None, err=None) -> int:
  """Runs a prediction; returns the exit status (0 ok, 1 some input failed).

  `loaded`: an `export.LoadedModel` (default: loaded from `opts.model`).
  Raises UsageError when it cannot start (nothing is written then).
  """
  out = sys.stdout if out is None else out
  err = sys.stderr if err is None else err
  from tqdm.auto import tqdm

  from painseeker_jax import export

  if opts.every_seconds is not None and opts.every_frames is not None:
    raise UsageError("give --every-seconds or --every-frames, not both")
  if opts.every_frames is None and opts.every_seconds is None:
    opts.every_seconds = 1.0
  if opts.every_seconds is not None and not opts.every_seconds > 0:
    raise UsageError(f"--every-seconds {opts.every_seconds}: must be > 0")
  if opts.every_frames is not None and opts.every_frames < 1:
    raise UsageError(f"--every-frames {opts.every_frames}: must be >= 1")
  if opts.batch_size < 1:
    raise UsageError(f"--batch-size {opts.batch_size}: must be >= 1")
  if not opts.paths:
    raise UsageError("no input given: name image files, folders, globs or videos")

  sources = collect_inputs(opts.paths)
  plots = _check_outputs(opts, sources)
  if loaded is None:
    try:
      loaded = export.load(opts.model)
    except export.ModelLoadError as e:
      raise UsageError(str(e)) from None
  if opts.heatmaps and loaded.num_regions is None:
    raise UsageError(f"--heatmaps: the model ({loaded.config.model.name}) has no attention map; "
                     "heat maps need a PainSeeker model")
  print(f"painseeker predict: {loaded.describe()}", file=out)

  # Videos that cannot be opened become error rows now (and do not count for the bar).
  for s in sources:
    if s.kind == "video":
      try:
        s.est_frames = probe_video(s.path, opts.every_seconds, opts.every_frames)
      except InputError as e:
        s.kind, s.error = "error", str(e)
        plots.pop(s.path, None)
  num_images = sum(s.kind == "image" for s in sources)
  total = num_images + sum(s.est_frames for s in sources if s.kind == "video")
  batch_size = opts.batch_size
  if not any(s.kind == "video" for s in sources):  # all known: do not pad beyond them
    batch_size = max(1, min(batch_size, num_images))

  size = loaded.image_size
  fn = make_predict_fn(loaded)
  stacked = stack_variables(loaded.variables)
  fields = CSV_FIELDS + (["heatmap"] if opts.heatmaps else [])
  if opts.heatmaps:
    os.makedirs(opts.heatmaps, exist_ok=True)
  heat_names: set[str] = set()
  series: dict[str, tuple[list, list]] = {}
  stats = {"ok": 0, "frames": 0, "errors": 0, "pain": 0, "sum_p": 0.0, "videos": set()}
  t_start = time.time()

  f = open(opts.output, "w" if opts.overwrite else "x", encoding="utf-8", newline="")
  writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
  writer.writeheader()
  f.flush()
  bar = tqdm(total=total, unit="img", desc="predict", disable=(None if opts.progress is None
                                                               else not opts.progress), file=err,
             dynamic_ncols=True)

  def flush(pending: list[_Item]):
    for it in pending:
      if it.video_end is not None:
        if it.video_end in plots and series.get(it.video_end, ([], []))[0]:
          times, ps = series[it.video_end]
          plot_time_course(plots[it.video_end], it.video_end, times, ps, loaded.is_ensemble)
        continue
      row = it.row
      if row["error"]:
        stats["errors"] += 1
        bar.write(f"error: {row['error']}", file=err)
      writer.writerow({k: row.get(k, "") for k in fields})
    f.flush()
    pending.clear()

  def run_batch(batch: list[_Item]):
    images = np.zeros((batch_size, size, size, 3), np.uint8)
    for j, it in enumerate(batch):
      images[j] = it.image
    p, _, beta = fn(stacked, images)
    p = np.asarray(p)
    beta = None if beta is None else np.asarray(beta)
    for j, it in enumerate(batch):
      row = it.row
      pj = float(p[j])
      label = loaded.class_names[int(pj > THRESHOLD)]
      row["p_pain"], row["label"] = f"{pj:.6f}", label
      stats["ok"] += 1
      stats["sum_p"] += pj
      stats["pain"] += int(pj > THRESHOLD)
      if row["frame"] != "":
        stats["frames"] += 1
        stats["videos"].add(row["path"])
        ts = series.setdefault(row["path"], ([], []))
        ts[0].append(float(row["time_s"]))
        ts[1].append(pj)
      if opts.heatmaps and beta is not None:
        stem = _stem(row["path"]) + (f"_f{int(row['frame']):06d}" if row["frame"] != "" else "")
        name = _unique_name(stem, heat_names)
        heatmap_overlay(it.image, beta[j], pj, label).save(os.path.join(opts.heatmaps, name))
        row["heatmap"] = name
      it.image = None
    bar.update(len(batch))

  pending: list[_Item] = []
  batch: list[_Item] = []
  try:
    for it in _background(_items(sources, opts, size), maxsize=_PREFETCH_BATCHES * batch_size):
      pending.append(it)
      if it.row is not None and it.image is not None:
        batch.append(it)
        if len(batch) == batch_size:
          run_batch(batch)
          batch = []
          flush(pending)
      elif not batch:
        flush(pending)
    if batch:
      run_batch(batch)
    flush(pending)
  finally:
    bar.close()
    f.close()

  seconds = time.time() - t_start
  n = stats["ok"]
  parts = [f"{n - stats['frames']} image(s)"] if n - stats["frames"] or not stats["videos"] else []
  if stats["videos"]:
    parts.append(f"{stats['frames']} frame(s) of {len(stats['videos'])} video(s)")
  print(f"painseeker predict: scored {', '.join(parts)} in {seconds:.1f} s; "
        f"{stats['errors']} error(s)", file=out)
  if n:
    print(f"  mean p_pain {stats['sum_p'] / n:.4f}; predicted pain: {stats['pain']} of {n} "
          f"({100.0 * stats['pain'] / n:.1f}%), threshold {THRESHOLD}", file=out)
  print(f"  results: {opts.output}", file=out)
  if opts.heatmaps:
    print(f"  heat maps: {opts.heatmaps}", file=out)
  for v in sorted(stats["videos"]):
    if v in plots and os.path.exists(plots[v]):
      print(f"  time course of {v}: {plots[v]}", file=out)
  if stats["errors"]:
    print(f"painseeker predict: {stats['errors']} input(s) failed; see the error column of "
          f"{opts.output}", file=err)
    return 1
  return 0
