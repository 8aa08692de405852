"""`painseeker predict`: scores new face images, folders and videos.

Pipeline:
  * options (`validate_options`): checked before anything is read; the rule
    for sampling video frames (every N seconds or every N frames, not both;
    every second by default) lives in `video_sampling` alone;
  * inputs (`collect_inputs`): files, folders (recursive), globs; images
    (JPEG, PNG, BMP, TIFF, WebP) and videos (mp4, avi, mov, mkv, ...);
  * face boxes (`load_boxes`, `--boxes`): per video a tracking file
    (DeepLabCut .h5/.csv, SLEAP analysis .h5, or a plain box CSV; read and
    turned into square face boxes by `tracking`), matched by name or given as
    VIDEO=FILE, and checked against its video (frame count, resolution) before
    anything is written; a box CSV keyed by image path for images (an input image that
    none of its rows names is `skipped=not_in_boxes`; a row naming no file stops the run).
    With several animals every frame gives one row per animal. Videos scored on whole frames
    (neither --boxes nor --crop) get one warning naming them (`_warn_whole_frames`);
  * decoding (`load_image`, `iter_frames`, `prepare`): EXIF rotation, any PIL
    mode to RGB (`images.to_rgb`: grayscale, RGBA, CMYK, 16-bit), the face box
    (the `--crop` box, a box from `--boxes`, or the whole image), the quality
    gate (`quality`: sharpness and exposure of the crop; below the thresholds
    the row is `skipped=blurred` / `dark`; no confident box is
    `skipped=no_face`), then the same bilinear resize to the model's input size
    as the evaluation pipeline (`input_pipeline.decode_resize`). Video frames
    are read with PyAV (which ships its own FFmpeg) and sampled every N seconds
    or N frames. Decoding runs in background threads while the network runs;
  * inference (`make_predict_fn`): one jit-compiled function with a fixed
    batch shape (the last batch padded with zeros) around the shared
    inference core (`inference.outputs`: the model's normalisation, the
    network, the softmaxes). An ensemble (the fold models of a LORO work
    directory) runs its members one after another inside that function
    (`lax.map`) and averages their probabilities (p_pain, the probabilities
    of each AU's levels for models with AU heads, and their attention maps,
    for the heat maps); an AU's score is the expectation of the averaged
    level probabilities (0..2);
  * the loop (`run`): decoded images are batched and scored, and their rows
    handed in input order to the report;
  * outputs (`predict_report.Report`): the CSV (one row per image or sampled
    frame and animal, with the box it scored, its sharpness and exposure, and
    why it was skipped; written to `<output>.partial`, flushed after every batch,
    and renamed over --output at the end: a crash keeps what was done there and
    leaves an earlier --output as it was; with AU heads also the expected score
    of each AU and their mean, `grimace_score`), heat-map PNGs, one
    p_pain-over-time plot per video and animal, the session summary
    (`<output stem>_summary.csv` / `.md`: counts, mean p_pain with a
    block-bootstrap interval, share of time in pain, AU means), a console
    summary.

A file that cannot be read or decoded, an empty folder, an unsupported video or
an input for which the network's output is not finite gives a row with the
message in the `error` column and a message on stderr; the run goes on and
exits with status 1 at the end. No output ever replaces an input (an image, a
video, a --boxes file), --overwrite or not (`_check_not_inputs`, before anything
is written). Nothing here imports
TensorFlow, TFDS or the trainer.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import glob
import math
import os
import queue
import shlex
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from painseeker_jax import predict_report, quality, tracking
from painseeker_jax.images import IMAGE_EXTENSIONS, to_rgb
from painseeker_jax.predict_report import (  # noqa: F401  (the report's names, re-exported)
  CSV_FIELDS,
  HEATMAP_DISPLAY_SIZE,
  THRESHOLD,
  Item,
  heatmap_overlay,
  new_row,
  plot_time_course,
  smooth,
)

VIDEO_EXTENSIONS = (
  ".mp4",
  ".m4v",
  ".mov",
  ".avi",
  ".mkv",
  ".webm",
  ".mpg",
  ".mpeg",
  ".wmv",
  ".flv",
  ".mts",
  ".m2ts",
  ".ts",
  ".3gp",
  ".ogv",
)
# Decoded images may be held while the network runs: a bounded look-ahead.
_PREFETCH_BATCHES = 2


class InputError(Exception):
  """One input (a file, folder, frame) cannot be used; the message names it."""


class UsageError(Exception):
  """The run cannot start (bad option, existing output, unusable model)."""


# ---------------------------------------------------------------------------
# Options.


@dataclasses.dataclass
class Options:
  """The settings of a run (the command's options); `validate_options` checks them."""

  model: str
  output: str
  paths: list
  heatmaps: str | None = None
  every_seconds: float | None = None
  every_frames: int | None = None
  crop: tuple | None = None
  boxes: list = dataclasses.field(default_factory=list)  # tracking files, or VIDEO=FILE
  face_keypoints: list | None = None  # None: tracking.is_face_keypoint decides
  min_likelihood: float = tracking.DEFAULT_MIN_LIKELIHOOD
  min_keypoints: int = tracking.DEFAULT_MIN_KEYPOINTS
  min_sharpness: float = quality.DEFAULT_MIN_SHARPNESS
  min_exposure: float = quality.DEFAULT_MIN_EXPOSURE
  batch_size: int = 64
  overwrite: bool = False
  num_threads: int = 4
  progress: bool | None = None  # None: only on a terminal


def video_sampling(
  every_seconds: float | None, every_frames: int | None
) -> tuple[float | None, int | None]:
  """The rule for sampling video frames: every `every_seconds` seconds or every
  `every_frames`-th frame, not both; every second when neither is given; seconds
  > 0, frames >= 1. Returns (every_seconds, every_frames) with exactly one of them
  set; raises UsageError."""
  if every_seconds is not None and every_frames is not None:
    raise UsageError("give --every-seconds or --every-frames, not both")
  if every_frames is None and every_seconds is None:
    every_seconds = 1.0
  if every_seconds is not None and not every_seconds > 0:
    raise UsageError(f"--every-seconds {every_seconds}: must be > 0")
  if every_frames is not None and every_frames < 1:
    raise UsageError(f"--every-frames {every_frames}: must be >= 1")
  return every_seconds, every_frames


def validate_options(opts: Options) -> Options:
  """Checks what needs neither the inputs nor the model (the video sampling, the
  batch size, that some input is named); returns a copy with the sampling
  resolved (`video_sampling`). Raises UsageError."""
  every_seconds, every_frames = video_sampling(opts.every_seconds, opts.every_frames)
  if opts.batch_size < 1:
    raise UsageError(f"--batch-size {opts.batch_size}: must be >= 1")
  if not opts.paths:
    raise UsageError("no input given: name image files, folders, globs or videos")
  if opts.boxes and opts.crop is not None:
    raise UsageError("give --crop (one fixed box) or --boxes (a box per frame), not both")
  if not 0 <= opts.min_likelihood <= 1:
    raise UsageError(f"--min-likelihood {opts.min_likelihood}: must be in [0, 1]")
  if opts.min_keypoints < 2:
    raise UsageError(f"--min-keypoints {opts.min_keypoints}: a box needs >= 2 keypoints")
  if opts.min_sharpness < 0:
    raise UsageError(f"--min-sharpness {opts.min_sharpness}: must be >= 0 (0: no check)")
  if not 0 <= opts.min_exposure <= 1:
    raise UsageError(f"--min-exposure {opts.min_exposure}: must be in [0, 1] (0: no check)")
  return dataclasses.replace(opts, every_seconds=every_seconds, every_frames=every_frames)


# ---------------------------------------------------------------------------
# Inputs.


@dataclasses.dataclass
class Source:
  kind: str  # "image", "video" or "error"
  path: str
  error: str = ""
  est_frames: int = 0  # videos: expected number of sampled frames (progress bar)


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


def _other_case(path: str) -> str | None:
  """The existing file or folder whose path differs from `path` only in the case of letters
  (`v0.JPG` for `v0.jpg`, `Faces/a.png` for `faces/a.png`; the first in name order), written as
  `path` is (relative or absolute); None when `path` exists or no such one does."""

  def resolve(p: str) -> str | None:
    if os.path.lexists(p):
      return p
    head, tail = os.path.split(p)
    if not tail or head == p:
      return None
    parent = resolve(head) if head else ""
    if parent is None:
      return None
    try:
      names = sorted(os.listdir(parent or "."))
    except OSError:
      return None
    hits = [n for n in names if n.casefold() == tail.casefold()]
    return os.path.join(parent, hits[0]) if hits else None

  if not path or os.path.lexists(path):
    return None
  return resolve(path)


def _case_hint(path: str, files_only: bool = False) -> str:
  """'; X exists ...' when `path` is not found but X, differing only in case, is ('' if not)."""
  other = _other_case(path)
  if other is None or (files_only and not os.path.isfile(other)):
    return ""
  return (
    f"; {other} exists, its name differs only in upper/lower case (file names are "
    "case-sensitive here): write the name as it is on disk"
  )


def collect_inputs(paths: Sequence[str], folders: list[str] | None = None) -> list[Source]:
  """Expands files, folders (recursive) and globs into sources, in the given order.

  In folders only files with an image or video extension are taken (others
  are skipped); a file named explicitly is tried as an image unless its
  extension is a video one. Problems become `error` sources. The folders read
  (named or matched by a glob) are appended to `folders` when it is given.
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
    if folders is not None:
      folders.append(folder)
    files = [(f, _kind(f)) for f in _walk(folder)]
    files = [(f, k) for f, k in files if k]
    if not files:
      add(
        "error",
        folder,
        f"{folder}: empty folder: no images ({', '.join(IMAGE_EXTENSIONS)}) or "
        f"videos ({', '.join(VIDEO_EXTENSIONS)}) found in it or below it",
      )
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
      if matches and not any(os.path.isdir(m) or _kind(m) for m in matches):
        add(
          "error",
          arg,
          f"{arg}: {len(matches)} file(s) match (e.g. {matches[0]}) but none is an image "
          f"({', '.join(IMAGE_EXTENSIONS)}) or video ({', '.join(VIDEO_EXTENSIONS)}); "
          "convert them or change the pattern",
        )
    else:
      add("error", arg, f"{arg}: no such file or folder{_case_hint(arg)}")
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


def _cut(img: Image.Image, box, where: str) -> Image.Image:
  """The box (x, y, w, h; pixels of the upright image) cut out; None: the whole image. A box
  reaching outside the image raises InputError."""
  if box is None:
    return img
  x, y, w, h = box
  if x + w > img.width or y + h > img.height:
    raise InputError(
      f"{where}: the crop box x={x}, y={y}, w={w}, h={h} reaches outside the "
      f"image ({img.width}x{img.height})"
    )
  return img.crop((x, y, x + w, y + h))


def _resize(img: Image.Image, size: int) -> np.ndarray:
  if img.size != (size, size):
    img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
  return np.asarray(img, dtype=np.uint8)


def _crop_resize(img: Image.Image, size: int, crop, where: str) -> np.ndarray:
  return _resize(_cut(img, crop, where), size)


@dataclasses.dataclass
class Crop:
  """A face cut out of an image or frame: the network's input, or the reason it is skipped."""

  image: np.ndarray | None  # size x size x 3 uint8; None when skipped
  box: tuple[int, int, int, int] | None  # x, y, w, h in the upright image (None: no face)
  sharpness: float | None = None
  exposure: float | None = None
  skipped: str = ""  # "", "blurred" or "dark" (rows without a box: no_face, not_in_boxes)


def prepare(
  img: Image.Image,
  box,
  size: int,
  where: str,
  gate: tuple[float, float],
  full_size: tuple[int, int] | None = None,
  quality_image: Image.Image | None = None,
) -> Crop:
  """Cuts `box` (None: the whole image) out of `img`, measures the crop's sharpness and
  exposure (`quality.measure`) and, when it passes the gate (min sharpness, min exposure),
  resizes it to the network's input. Raises InputError for a box outside the image.

  For a whole image that the JPEG decoder reduced (`input_pipeline.decode_resize`'s draft):
  `full_size` is its size before the reduction (the box reported), `quality_image` a larger
  decode to measure the quality on when the reduced one is smaller than
  `quality.QUALITY_SIZE` (the gate's thresholds hold at that size)."""
  full = box is None
  face = _cut(img, box, where)
  if full:
    box = (0, 0, *(full_size or img.size))
  sharp, expo = quality.measure(quality_image if full and quality_image is not None else face)
  skipped = quality.verdict(sharp, expo, *gate)
  return Crop(None if skipped else _resize(face, size), tuple(box), sharp, expo, skipped)


def _open_image(path: str, draft_size: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
  """An image file -> (upright 8-bit RGB PIL image, its upright size before any reduction).

  `draft_size`: let the JPEG decoder reduce it to no less than draft_size x draft_size (as
  `input_pipeline.decode_resize`). Raises InputError."""
  try:
    f = open(path, "rb")
  except OSError as e:
    raise InputError(f"{path}: cannot read the file ({e.strerror or e})") from None
  try:
    with f, Image.open(f) as img:
      full = img.size
      if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees
        full = full[::-1]
      if draft_size:
        img.draft("RGB", (draft_size, draft_size))
      img = ImageOps.exif_transpose(img)
      img = to_rgb(img)
      img.load()
      return img, full
  except UnidentifiedImageError:
    raise InputError(
      f"{path}: not a readable image (supported: {', '.join(IMAGE_EXTENSIONS)}; "
      f"videos: {', '.join(VIDEO_EXTENSIONS)})"
    ) from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise InputError(f"{path}: cannot decode the image ({type(e).__name__}: {e})") from None


def load_image(path: str, size: int, crop=None) -> np.ndarray:
  """An image file -> size x size x 3 uint8, as the evaluation pipeline sees it.

  EXIF rotation applied, any mode converted to RGB (16-bit scaled, alpha on
  white), the crop box (in the upright image's pixels) cut out, then resized
  (bilinear, aspect not kept; JPEGs without a crop use the decoder's
  `draft` reduction exactly like `input_pipeline.decode_resize`). Raises
  InputError naming the file.
  """
  return _crop_resize(_open_image(path, size if crop is None else None)[0], size, crop, path)


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


@dataclasses.dataclass(frozen=True)
class VideoProbe:
  """What one opening of a video tells before decoding it: `est_rows`, the expected number
  of sampled frames (the progress bar); `num_frames`, the number of frames as the container
  states it (0 if unknown); `width` x `height` of the upright frame (display rotation
  applied)."""

  est_rows: int
  num_frames: int
  width: int
  height: int


def probe_video(path: str, every_seconds: float | None, every_frames: int | None) -> VideoProbe:
  """Opens the video once (decoding only its first frame, which carries the display
  rotation) and returns its `VideoProbe`; the sampling follows `video_sampling`, as
  `iter_frames` does. Raises InputError naming the file."""
  every_seconds, every_frames = video_sampling(every_seconds, every_frames)
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
    est = n
    if not est and duration and rate:
      est = int(round(duration * float(rate)))
    if every_frames:
      est = math.ceil((est or 1) / every_frames)
    elif duration:
      est = math.ceil(duration / every_seconds)
    width, height = stream.codec_context.width, stream.codec_context.height
    rotation = 0
    for frame in container.decode(stream):
      rotation = getattr(frame, "rotation", 0) or 0
      break
    if rotation % 180:
      width, height = height, width
    return VideoProbe(max(1, est or 1), int(n or 0), int(width), int(height))
  except (_av().error.FFmpegError, OSError, ValueError) as e:
    raise InputError(f"{path}: not a readable video ({e})") from None
  finally:
    container.close()


def iter_frames(
  path: str, *, every_seconds: float | None = None, every_frames: int | None = None
) -> Iterator[tuple[int, float, Image.Image]]:
  """Yields (frame index, time in seconds from the stream start, upright RGB PIL frame) of
  the sampled frames, then, after the last, (-(number of decoded frames), 0.0, None).

  Frames are sampled every `every_frames` decoded frames, or the first frame at
  or after each multiple of `every_seconds` (the rule of `video_sampling`:
  one of the two, every second by default; UsageError otherwise). The display
  rotation of the stream (phone videos) is applied. Raises InputError naming
  the file (and the frame, if decoding fails mid-way).
  """
  every_seconds, every_frames = video_sampling(every_seconds, every_frames)
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
        # (as frame.to_image(), pixel for pixel, at a third of its cost)
        img = Image.fromarray(frame.to_ndarray(format="rgb24"))
        rotation = getattr(frame, "rotation", 0) or 0
        if rotation:
          img = img.rotate(rotation, expand=True)
        yield i, float(t), img
    except (av.error.FFmpegError, OSError, ValueError) as e:
      raise InputError(f"{path}: decoding failed after frame {i} ({e})") from None
    if i < 0:
      raise InputError(f"{path}: no frame could be decoded")
    yield -(i + 1), 0.0, None
  finally:
    container.close()


# ---------------------------------------------------------------------------
# The network.


def make_predict_fn(loaded):
  """jit fn(stacked_variables, images_BxHxWx3 uint8) -> (p_B, p_FxB, beta_BxK or None,
  au_BxA or None).

  `stacked_variables` has a leading member axis F (1 for a model directory,
  `inference.stack_variables`); the members run one after another
  (`lax.map`, the fast choice on CPU), each through `inference.outputs` with
  the loaded model's normalisation, and p_B / beta are their means. `au_BxA`
  (models with AU heads) is each AU's expected score `sum_l l * q_l` (0..2),
  q the members' mean probabilities of the levels 0/1/2.
  """
  import jax
  import jax.numpy as jnp

  from painseeker_jax import inference

  model, mean, std = loaded.model, loaded.mean_rgb, loaded.std_rgb

  @jax.jit
  def fn(stacked, images):
    p_F, beta_F, au_F = jax.lax.map(
      lambda v: inference.outputs(model, v, images, mean, std), stacked
    )
    beta = None if beta_F is None else jnp.mean(beta_F, axis=0)
    au = None
    if au_F is not None:  # F x B x A x 3 -> B x A; a sum, not a matmul (TF32 on GPUs)
      q = jnp.mean(jnp.asarray(au_F, jnp.float32), axis=0)
      au = jnp.sum(q * jnp.arange(3, dtype=jnp.float32), axis=-1)
    return jnp.mean(p_F, axis=0), p_F, beta, au

  return fn


# ---------------------------------------------------------------------------
# The run.


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


NO_FACE = "no_face"  # a target without a usable face box
# An input image that no row of the --boxes image CSV(s) names (their paths name other files).
NOT_IN_BOXES = "not_in_boxes"


@dataclasses.dataclass
class BoxPlan:
  """Where the faces are (`--boxes`): each video's tracks, and the boxes of images."""

  videos: dict = dataclasses.field(default_factory=dict)  # video path -> tracking.Tracks
  images: dict | None = None  # realpath of an image -> [(animal, box)]; None: images whole
  files: list = dataclasses.field(default_factory=list)  # the --boxes files read (inputs)


def _fill(row: dict, crop: Crop) -> None:
  row["box_x"], row["box_y"], row["box_w"], row["box_h"] = crop.box
  row["sharpness"] = f"{crop.sharpness:.2f}"
  row["exposure"] = f"{crop.exposure:.4f}"
  row["skipped"] = crop.skipped


def _targets_items(
  img, path, targets, size, gate, frame="", t="", full_size=None, quality_image=None
) -> list[Item]:
  """The rows of one image or frame: one per (animal, box) target; box None is the whole
  image (`full_size`, `quality_image`: see `prepare`), a string (NO_FACE, NOT_IN_BOXES) the
  reason of a skipped row."""
  where = path if frame == "" else f"{path}, frame {frame}"
  out = []
  for animal, box in targets:
    row = new_row(path, frame, t, animal=animal)
    if isinstance(box, str):
      row["skipped"] = box
      out.append(Item(row))
      continue
    try:
      who = where + (f", animal {animal}" if animal else "")
      crop = prepare(img, box, size, who, gate, full_size, quality_image)
    except InputError as e:
      row["error"] = str(e)
      out.append(Item(row))
      continue
    _fill(row, crop)
    out.append(Item(row, crop.image))
  return out


def _image_targets(path: str, img: Image.Image, opts: Options, plan: BoxPlan) -> list:
  if plan.images is None:
    return [("", opts.crop)]
  entries = plan.images.get(os.path.realpath(path))
  if entries is None:
    return [("", NOT_IN_BOXES)]
  if not entries:
    return [("", NO_FACE)]
  out = []
  for animal, box in entries:
    clipped = tracking.clip_box(box, img.width, img.height)
    out.append((animal, NO_FACE if clipped is None else clipped))
  return out


def _items(sources: list[Source], opts: Options, size: int, plan: BoxPlan) -> Iterator[Item]:
  """Rows in input order: decoded images and frames (one per animal with --boxes), skipped
  and error rows, end-of-video markers."""
  gate = (opts.min_sharpness, opts.min_exposure)

  draft = opts.crop is None and plan.images is None  # whole images: as the evaluation reads them

  def decode(path):
    try:
      img, full = _open_image(path, size if draft else None)
      larger = None
      if img.size != full and min(img.size) < quality.QUALITY_SIZE:
        larger = _open_image(path, quality.QUALITY_SIZE)[0]
      targets = _image_targets(path, img, opts, plan)
      return _targets_items(img, path, targets, size, gate, full_size=full, quality_image=larger)
    except InputError as e:
      return [Item(new_row(path, error=str(e)))]

  window = max(2 * opts.batch_size, 8)
  i = 0
  while i < len(sources):
    s = sources[i]
    if s.kind == "image":  # a run of consecutive images: decode in parallel
      j = i
      while j < len(sources) and sources[j].kind == "image":
        j += 1
      paths = [x.path for x in sources[i:j]]
      for items in _bounded_map(decode, paths, opts.num_threads, window):
        yield from items
      i = j
      continue
    if s.kind == "error":
      yield Item(new_row(s.path, error=s.error))
    else:
      yield from _video_items(s.path, opts, size, plan.videos.get(s.path), gate)
      yield Item(None, video_end=s.path)
    i += 1


def _video_items(path: str, opts: Options, size: int, tracks, gate) -> Iterator[Item]:
  try:
    for frame, t, img in iter_frames(
      path, every_seconds=opts.every_seconds, every_frames=opts.every_frames
    ):
      if img is None:  # the end: -frame frames were decoded
        if tracks is not None and (
          -frame != tracks.num_frames if tracks.exact_length else -frame < tracks.num_frames
        ):
          covers = "covers" if tracks.exact_length else "has boxes up to frame"
          last = tracks.num_frames if tracks.exact_length else tracks.num_frames - 1
          yield Item(
            new_row(
              path,
              error=f"{path}: the video has {-frame} frames but the tracking file "
              f"{tracks.path} {covers} {last}: it belongs to another video or another cut "
              "of it, so the faces of this video's rows may be wrong; give the right file as "
              "VIDEO=FILE",
            )
          )
        continue
      if tracks is None:
        targets = [("", opts.crop)]
      else:
        targets = []
        for a, animal in enumerate(tracks.animals):
          box = tracking.clip_box(tracks.box(frame, a), img.width, img.height)
          targets.append((animal, NO_FACE if box is None else box))
      yield from _targets_items(img, path, targets, size, gate, frame, t)
  except InputError as e:
    yield Item(new_row(path, error=str(e)))


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


# The rule for --heatmaps that keeps the inputs safe (`_check_not_inputs`).
HEATMAPS_RULE = (
  "the heat-map folder must not be an input folder, lie inside one, or hold input files"
)


def _file_id(path: str) -> tuple[int, int] | None:
  """(device, inode) of the file `path` leads to (symbolic links followed); None if none."""
  try:
    st = os.stat(path)
  except (OSError, ValueError):
    return None
  return st.st_dev, st.st_ino


def _check_not_inputs(
  opts: Options,
  sources: list[Source],
  folders: list[str],
  others: dict[str, str],
  box_files: Sequence[str] = (),
) -> None:
  """Refuses (UsageError, with or without --overwrite) an output that would replace an
  input: the CSV or another output (`others`: path -> what it is, e.g. a video's plot, the
  session summary) being an input file (an image, a video, or a --boxes file: `box_files`),
  or a heat-map folder breaking `HEATMAPS_RULE` (heat maps are written directly in that
  folder, under names made from the inputs' names). Files and folders are compared as the
  file system sees them (device and inode: symbolic links, hard links, other spellings of a
  path)."""
  inputs: dict[tuple[int, int], str] = {}
  for s in sources:
    if s.kind in ("image", "video"):
      key = _file_id(s.path)
      if key is not None:
        inputs.setdefault(key, s.path)
  for path in box_files:
    key = _file_id(path)
    if key is not None:
      inputs.setdefault(key, f"{path} (a --boxes file)")
  refuse = "refusing to write over an input (with or without --overwrite)"
  outputs = [(opts.output, f"--output {opts.output}")]
  outputs += list(others.items())
  for path, what in outputs:
    src = inputs.get(_file_id(path))
    if src is not None:
      raise UsageError(f"{what} is the input {src}; {refuse}: choose another file")
  if not opts.heatmaps:
    return
  input_folders: dict[tuple[int, int], str] = {}
  for folder in folders:
    key = _file_id(folder)
    if key is not None:
      input_folders.setdefault(key, folder)
  heat = os.path.realpath(opts.heatmaps)
  p = heat
  while True:  # the folder itself (if it exists), then the folders above it
    folder = input_folders.get(_file_id(p))
    if folder is not None:
      where = "is" if p == heat else "lies inside"
      raise UsageError(
        f"--heatmaps {opts.heatmaps} {where} the input folder {folder}; heat maps could "
        f"replace its files; {refuse}: {HEATMAPS_RULE}"
      )
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  if os.path.isdir(opts.heatmaps):
    for name in sorted(os.listdir(opts.heatmaps)):
      src = inputs.get(_file_id(os.path.join(opts.heatmaps, name)))
      if src is not None:
        raise UsageError(
          f"--heatmaps {opts.heatmaps} holds the input {src} (as {name}); heat maps could "
          f"replace it; {refuse}: {HEATMAPS_RULE}"
        )


def _sessions(sources: list[Source], plan: BoxPlan) -> list[tuple[str, str]]:
  """(video, animal) of every video and animal the run will score (animal "": no tracks or
  a single-animal tracking file)."""
  out = []
  for s in sources:
    if s.kind == "video":
      tracks = plan.videos.get(s.path)
      out += [(s.path, a) for a in (tracks.animals if tracks is not None else [""])]
  return out


def _check_outputs(
  opts: Options, sources: list[Source], folders: list[str], plan: BoxPlan | None = None
) -> dict[tuple[str, str], str]:
  """Refuses outputs that are inputs (`_check_not_inputs`, always: images, videos, --boxes
  files), and existing outputs unless --overwrite (also the partial CSV an interrupted run
  left, `predict_report.partial_path`; while it is there every refusal names it and says that
  --overwrite starts over); returns the plot path of each (video, animal)."""
  plan = plan or BoxPlan()
  plots = predict_report.plot_paths(opts.output, _sessions(sources, plan))
  summaries = predict_report.summary_paths(opts.output)
  partial = predict_report.partial_path(opts.output)
  others = {**{p: f"{p} (the time-course plot of {v})" for (v, _), p in plots.items()}}
  if any(s.kind == "video" for s in sources):
    others.update({p: f"{p} (the session summary)" for p in summaries})
  others[partial] = f"{partial} (the rows an interrupted run wrote for --output {opts.output})"
  _check_not_inputs(opts, sources, folders, others, plan.files)
  out_dir = os.path.dirname(os.path.abspath(opts.output))
  if os.path.isdir(opts.output):
    raise UsageError(f"--output {opts.output} is a folder; give a CSV file name")
  # After an interrupted run (`<output>.partial` left, heat maps and plots perhaps too).
  maps = f" and the heat maps of the same names in {opts.heatmaps}" if opts.heatmaps else ""
  start_over = (
    f"--overwrite starts over (every input is scored again; it replaces {partial}{maps}); to "
    "keep the rows that file holds, move it away first"
  )
  interrupted = ""
  if os.path.lexists(partial) and not opts.overwrite:
    interrupted = f". An interrupted run left {partial} (the rows it scored): {start_over}"
  if os.path.exists(opts.output) and not opts.overwrite:
    raise UsageError(f"{opts.output} already exists; use --overwrite to replace it{interrupted}")
  if not os.path.isdir(out_dir):
    raise UsageError(
      f"{out_dir}: the folder for --output does not exist; create it (mkdir -p "
      f"{shlex.quote(out_dir)}) or give --output a path in an existing folder"
    )
  if opts.heatmaps:
    if os.path.exists(opts.heatmaps) and not os.path.isdir(opts.heatmaps):
      raise UsageError(f"--heatmaps {opts.heatmaps} is a file; give a folder")
    if os.path.isdir(opts.heatmaps) and os.listdir(opts.heatmaps) and not opts.overwrite:
      raise UsageError(
        f"{opts.heatmaps} already holds files; use --overwrite to write into it "
        f"(files of the same name are replaced) or choose an empty folder{interrupted}"
      )
  if interrupted:  # the partial CSV first: it says what the other files are
    raise UsageError(f"{others[partial]} already exists; {start_over}")
  for path, what in others.items():
    if os.path.exists(path) and not opts.overwrite:
      raise UsageError(f"{what} already exists; use --overwrite to replace it")
  return plots


# The header of a box CSV for images (`tracking.read_image_boxes`).
IMAGE_BOX_HEADER = "image,x,y,w,h (optional: animal, score)"
_IMAGE_BOX_COLUMNS = ("image", "x", "y", "w", "h")


def _first_line(path: str) -> str | None:
  """The first line of a .csv file (no line end); None for another file or one not readable
  as UTF-8 text (read_tracks names the problem)."""
  if not path.lower().endswith(".csv"):
    return None
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      return f.readline().rstrip("\r\n")
  except (OSError, UnicodeDecodeError):
    return None


def _columns(line: str) -> list[str]:
  """A CSV header line's column names (lower case, spaces stripped)."""
  return [c.strip().lower() for c in next(csv.reader([line]), [])]


def _is_image_box_csv(path: str) -> bool:
  """A plain box CSV keyed by image path (an `image` column) rather than by video frame."""
  line = _first_line(path)
  return line is not None and "image" in _columns(line)


def _not_image_box_csv(path: str) -> str | None:
  """Why the .csv `path`, given to --boxes with no video among the inputs, is not an image
  box CSV (the header it has, the one it needs); None when it is a tracking file for videos
  (a DeepLabCut CSV, a box CSV keyed by `frame` or `video`) or not a readable CSV."""
  line = _first_line(path)
  if line is None:
    return None
  columns = _columns(line)
  if columns[:1] == ["scorer"] or "frame" in columns or "video" in columns:
    return None
  why = f"--boxes {path}: not a box CSV for images: "
  if not line.strip():
    return why + f"its first line is empty, but it must be the header {IMAGE_BOX_HEADER}"
  why += f"its header is {line.strip()!r}, but one needs the header {IMAGE_BOX_HEADER}"
  if ";" in line and "," not in line:
    return (
      why + "; its columns are separated by ';': the separator must be a comma (in Excel, "
      'save it as "CSV UTF-8 (comma delimited)")'
    )
  missing = [c for c in _IMAGE_BOX_COLUMNS if c not in columns]
  return why + f"; it has no column {', '.join(missing)}: correct the header"


def _stated_frames(path: str) -> int:
  """The number of frames the video's container states; 0 when unknown or when the video
  cannot be opened (`probe_video` reports that later). Nothing is decoded."""
  try:
    container = _open_video(path)
  except InputError:
    return 0
  try:
    return max(0, int(container.streams.video[0].frames or 0))
  finally:
    container.close()


def load_boxes(opts: Options, sources: list[Source]) -> BoxPlan:
  """Reads the --boxes files (before anything is written): every video needs one (matched by
  name, or VIDEO=FILE; a box CSV's `frame` column is bounded by the video's stated frame
  count before its table is made); image box CSVs (an `image` column) give the boxes of
  images, each row's path read from the working directory or from the CSV's folder (a path
  that is neither is refused; an input image without a row is skipped=not_in_boxes). Rows
  below --min-likelihood count as no face. Raises UsageError naming the file (and line) and
  the problem."""
  if not opts.boxes:
    return BoxPlan()
  videos = [s.path for s in sources if s.kind == "video"]
  image_files, video_files = [], []
  for arg in opts.boxes:
    explicit = "=" in arg and not os.path.exists(arg)
    (video_files if explicit or not _is_image_box_csv(arg) else image_files).append(arg)
  plan = BoxPlan()
  try:
    if video_files:
      if not videos:
        for arg in video_files:  # perhaps meant as an image box CSV: say what it lacks
          if "=" in arg and not os.path.exists(arg):
            continue
          tracking._check_file(arg)  # a missing file: say so first
          why = _not_image_box_csv(arg)
          if why is not None:
            raise UsageError(why)
        raise UsageError(
          f"--boxes {', '.join(video_files)}: tracking files for videos, but no video is "
          "among the inputs"
        )
      matched = tracking.match_tracking_files(videos, video_files)
      for video, path in matched.items():
        plan.files.append(path)
        plan.videos[video] = tracking.read_tracks(
          path,
          face_keypoints=opts.face_keypoints,
          min_likelihood=opts.min_likelihood,
          min_keypoints=opts.min_keypoints,
          video=video,
          num_frames=_stated_frames(video),
        )
    missing = [v for v in videos if v not in plan.videos]
    if missing:
      raise UsageError(
        f"--boxes: no tracking file for the video(s) {', '.join(missing)}; give one per video "
        "(named after the video, as DeepLabCut and SLEAP name them, or as VIDEO=FILE)"
      )
    if image_files:
      plan.images = {}
      for path in image_files:
        plan.files.append(path)
        lines: dict[str, int] = {}
        boxes = tracking.read_image_boxes(path, min_likelihood=opts.min_likelihood, lines=lines)
        base = os.path.dirname(os.path.abspath(path))
        for name, entries in boxes.items():
          candidates = (name, os.path.join(base, name))
          found = next((c for c in candidates if os.path.isfile(c)), None)
          if found is None:
            looked = " and ".join(dict.fromkeys(os.path.abspath(c) for c in candidates))
            hint = next(filter(None, (_case_hint(c, files_only=True) for c in candidates)), "")
            raise UsageError(
              f"{path}, line {lines[name]}: the image {name!r} is not found (looked for "
              f"{looked}); an image path is read from the working directory or from the CSV's "
              f"folder: correct it, or remove the row{hint}"
            )
          plan.images.setdefault(os.path.realpath(found), []).extend(entries)
  except tracking.TrackingError as e:
    raise UsageError(str(e)) from None
  return plan


def _check_tracks_fit(path: str, probe: VideoProbe, tracks) -> None:
  """Refuses (UsageError) a tracking file made for another video: another number of frames
  or keypoints beyond the frame."""
  num_frames, width, height = probe.num_frames, probe.width, probe.height
  if tracks.exact_length and num_frames and num_frames != tracks.num_frames:
    raise UsageError(
      f"{tracks.path}: covers {tracks.num_frames} frames but the video {path} has "
      f"{num_frames}: it is the tracking file of another video (or another cut); give the "
      "right one as VIDEO=FILE"
    )
  if not tracks.exact_length and num_frames and tracks.num_frames > num_frames:
    raise UsageError(
      f"{tracks.path}: has boxes up to frame {tracks.num_frames - 1} but the video {path} has "
      f"{num_frames} frames: it is the tracking file of another video (or another cut); give "
      "the right one as VIDEO=FILE"
    )
  mx, my = tracks.max_xy
  if mx > width * 1.02 + 2 or my > height * 1.02 + 2:
    raise UsageError(
      f"{tracks.path}: coordinates reach x={mx:.0f}, y={my:.0f} but the frames of {path} are "
      f"{width}x{height}: it was made on a video of another resolution"
    )


def _load_model(path: str):
  from painseeker_jax import export

  try:
    return export.load(path)
  except export.ModelLoadError as e:
    raise UsageError(str(e)) from None


def _probe_videos(sources: list[Source], opts: Options, plots: dict, plan: BoxPlan) -> None:
  """Sets each video's expected number of rows (the progress bar); a video that cannot be
  opened becomes an error source now (and loses its plots); a tracking file that does not
  fit its video stops the run (UsageError, nothing written yet)."""
  for s in sources:
    if s.kind == "video":
      try:
        probe = probe_video(s.path, opts.every_seconds, opts.every_frames)
        s.est_frames = probe.est_rows
        tracks = plan.videos.get(s.path)
        if tracks is not None:
          _check_tracks_fit(s.path, probe, tracks)
          s.est_frames *= len(tracks.animals)
      except InputError as e:
        s.kind, s.error = "error", str(e)
        for key in [k for k in plots if k[0] == s.path]:
          plots.pop(key)


def _warn_whole_frames(sources: list[Source], opts: Options, plan: BoxPlan, err) -> None:
  """One warning (on `err`) naming the videos scored on whole frames: no --crop and no
  tracking file. The model was trained on face crops; a video that is a face close-up is
  fine, so they are scored all the same. Images without boxes are the normal input: silent."""
  if opts.crop is not None:
    return
  whole = [s.path for s in sources if s.kind == "video" and s.path not in plan.videos]
  if not whole:
    return
  print(
    f"painseeker predict: warning: {tracking._short_list(whole)}: scored on whole frames (no "
    "--boxes, no --crop), but the model was trained on face crops; unless the video shows a "
    "face close-up, give --boxes (a DeepLabCut or SLEAP tracking file, or a box CSV "
    "video,frame,x,y,w,h) or --crop x,y,w,h",
    file=err,
  )


def _score_batch(
  batch: list[Item], fn, stacked, batch_size: int, size: int, report: predict_report.Report
) -> None:
  """Runs the network on a batch (padded with zeros to `batch_size`) and hands the
  scores to the report; the images are dropped then."""
  images = np.zeros((batch_size, size, size, 3), np.uint8)
  for j, it in enumerate(batch):
    images[j] = it.image
  p, _, beta, au = fn(stacked, images)
  report.add_scores(
    batch,
    np.asarray(p),
    None if beta is None else np.asarray(beta),
    None if au is None else np.asarray(au),
  )
  for it in batch:
    it.image = None


def _score_all(
  items: Iterable[Item], fn, stacked, batch_size: int, size: int, report: predict_report.Report
) -> None:
  """Batches the decoded images, scores each full batch and hands the rows to the
  report in input order: rows wait until every image before them is scored."""
  pending: list[Item] = []
  batch: list[Item] = []
  for it in items:
    pending.append(it)
    if it.image is not None:
      batch.append(it)
      if len(batch) == batch_size:
        _score_batch(batch, fn, stacked, batch_size, size, report)
        report.write(pending)
        pending, batch = [], []
    elif not batch:  # an error row or a video's end with nothing before it waiting
      report.write(pending)
      pending = []
  if batch:
    _score_batch(batch, fn, stacked, batch_size, size, report)
  report.write(pending)


def run(opts: Options, loaded=None, out=None, err=None) -> int:
  """Runs a prediction; returns the exit status (0 ok, 1 some input failed).

  `loaded`: an `export.LoadedModel` (default: loaded from `opts.model`).
  Raises UsageError when it cannot start (nothing is written then).
  """
  out = sys.stdout if out is None else out
  err = sys.stderr if err is None else err
  from painseeker_jax import inference

  opts = validate_options(opts)
  folders: list[str] = []
  sources = collect_inputs(opts.paths, folders)
  plan = load_boxes(opts, sources)
  plots = _check_outputs(opts, sources, folders, plan)
  if loaded is None:
    loaded = _load_model(opts.model)
  if opts.heatmaps and loaded.num_regions is None:
    raise UsageError(
      f"--heatmaps: the model ({loaded.config.model.name}) has no attention map; "
      "heat maps need a PainSeeker model"
    )
  print(f"painseeker predict: {loaded.describe()}", file=out)

  _probe_videos(sources, opts, plots, plan)
  _warn_whole_frames(sources, opts, plan, err)
  num_images = sum(s.kind == "image" for s in sources)
  total = num_images + sum(s.est_frames for s in sources if s.kind == "video")
  batch_size = opts.batch_size
  if not any(s.kind == "video" for s in sources):  # all known: do not pad beyond them
    batch_size = max(1, min(batch_size, num_images))

  size = loaded.image_size
  fn = make_predict_fn(loaded)
  stacked = inference.stack_variables(loaded.variables)
  report = predict_report.Report(
    opts.output,
    overwrite=opts.overwrite,
    heatmaps=opts.heatmaps,
    plots=plots,
    class_names=loaded.class_names,
    ensemble=loaded.is_ensemble,
    au_names=loaded.au_names,
    total=total,
    progress=opts.progress,
    out=out,
    err=err,
  )
  try:
    items = _background(_items(sources, opts, size, plan), maxsize=_PREFETCH_BATCHES * batch_size)
    with contextlib.closing(items):  # stops the decoding thread, also after a crash
      _score_all(items, fn, stacked, batch_size, size, report)
    report.finish()
  finally:
    report.close()
  return report.summary()
