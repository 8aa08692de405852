"""Face boxes from a lab's own tracking output, for `painseeker predict --boxes FILE`.

Accepted files (`read_tracks` tells them apart by content and extension):
  * DeepLabCut analysis output (`deeplabcut.analyze_videos`, also `..._filtered` and the
    multi-animal `..._el` files): a pandas DataFrame, one row per video frame, columns
    (scorer, [individuals,] bodyparts, coords) with coords x, y, likelihood; as HDF5 (.h5, read
    with pandas, which needs PyTables) or CSV (.csv, first cell "scorer"). In multi-animal files
    the individual "single" holds the unique bodyparts and is not an animal.
  * SLEAP analysis files (`sleap-convert --format analysis`, .h5, read with h5py): the
    dataset `tracks` (tracks, 2, nodes, frames), `node_names`, `track_names`, `point_scores`;
    sleap-io's exports in another axis order (`sio export --h5-dim-order standard`) name their
    axes in each dataset's `dims` attribute and are read by it.
    Column i is video frame i: the GUI's and sleap-convert's export writes every frame from
    0 to the last one with a prediction (sleap's `write_tracking_h5`, `all_frames=True`, and
    its own analysis reader takes the column as the frame index). The old standalone
    `python -m sleap.info.write_tracking_h5` without `--all-frames` starts at the first
    predicted frame and records no offset: such a file cannot be told apart and is read
    shifted, so export with sleap-convert. Untracked predictions (no track names, or sleap-io's
    one empty name) are read as one animal when the file has one column, as SLEAP exports them
    (it writes one of a frame's untracked instances there: track a video of several rats
    first); several untracked columns are refused, since a column is then no identity.
  * A plain box CSV, e.g. a face detector's output: video,frame,x,y,w,h[,animal][,score], frame
    0-based; boxes are used as written (a detector's box already is a face box). One file may
    hold the boxes of several videos (`match_tracking_files`, `read_tracks(video=...)`).
  * For images, a box CSV keyed by image path: image,x,y,w,h[,animal][,score]
    (`read_image_boxes`).

Keypoints become face boxes in `keypoints_to_boxes`: the square around the confident face
keypoints (eyes, ears, nose/snout; `is_face_keypoint`), widened by BOX_MARGIN and moved down by
BOX_CENTER_DY, the crop geometry of the synthetic twin. All coordinates are pixels of the video
frame, x to the right and y down. A file that cannot be used raises `TrackingError`, whose message
names the file, says what is wrong and what to do.

Nothing here imports JAX or TensorFlow; pandas and h5py (the `tracking` extra) are imported by
the functions that read DeepLabCut and SLEAP files.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import math
import os
import re
from collections.abc import Sequence

import numpy as np

# DeepLabCut's default `pcutoff` (config.yaml): the likelihood from which a keypoint counts as
# found. Applied the same way to SLEAP's point scores and to a box CSV's `score` column.
DEFAULT_MIN_LIKELIHOOD = 0.6
# Confident face keypoints a frame needs for a face box.
DEFAULT_MIN_KEYPOINTS = 3
# The crop geometry of the synthetic twin, measured on its 1,295 images (docs/results.md, "Face
# boxes from keypoints"): the twin's 256-px crop side is 1.24x the larger side of the extent of
# its visible eye/ear/nose landmarks (median; IQR 1.16-1.39), and the crop's centre lies 0.03 of
# a side below the centre of that extent.
BOX_MARGIN = 1.24
BOX_CENTER_DY = 0.03
# `clip_box` drops boxes smaller than this on a side (pixels).
MIN_BOX_SIDE = 8
# The largest `frame` a box CSV may hold when the video's frame count is unknown: 27.7 hours at
# 100 fps. The boxes are a dense table (frames x animals x 4 floats), so a column of timestamps
# (e.g. milliseconds) would ask for gigabytes; it is refused before the table is made.
MAX_CSV_FRAMES = 10_000_000

INSTALL_HINT = 'pip install "painseeker-jax[tracking]"'
ACCEPTED_FORMATS = (
  "accepted are DeepLabCut analysis files (.h5 or .csv, as written by analyze_videos), SLEAP "
  "analysis files (.h5, from `sleap-convert --format analysis`) and box CSVs with the header "
  "video,frame,x,y,w,h (optional columns animal, score)"
)
_HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".slp")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_DLC_HEADER_ROWS = ("scorer", "individuals", "bodyparts", "coords")
_DLC_SINGLE = "single"  # multi-animal DeepLabCut: the individual holding the unique bodyparts


class TrackingError(Exception):
  """A tracking file cannot be used; the message names the file (and the field/line) and says
  what to do."""


# --- face keypoints --------------------------------------------------------------------------

# Face keypoint names, normalised (lowercase, only letters and digits), under the spellings of
# DeepLabCut's and SLEAP's common skeletons. "rear" is deliberately absent (a rear paw, not a
# right ear); "R_ear" and "ear-r" are accepted by the separated-side rule in `is_face_keypoint`.
EYE_NAMES = frozenset(
  {"eye", "lefteye", "righteye", "leye", "reye", "eyeleft", "eyeright", "eyel", "eyer"}
)
EAR_NAMES = frozenset({"ear", "leftear", "rightear", "lear", "earleft", "earright", "earl", "earr"})
NOSE_NAMES = frozenset({"nose", "nosetip", "snout", "snouttip"})
FACE_KEYPOINT_NAMES = EYE_NAMES | EAR_NAMES | NOSE_NAMES
_SIDES = frozenset({"l", "r", "left", "right"})
_SIDED_PARTS = frozenset({"eye", "ear"})


def _normalise(name: str) -> str:
  return re.sub(r"[^0-9a-z]", "", name.lower())


def is_face_keypoint(name: str) -> bool:
  """True for an eye, ear or nose/snout keypoint name.

  The name is normalised (lowercase, anything but letters and digits dropped) and looked up in
  FACE_KEYPOINT_NAMES: "Left Eye", "left_eye", "leftEye", "eye_left", "leye", "EyeL", "ear",
  "Nose", "nose_tip", "snout". A one-letter side is also accepted when a separator (_, - or a
  space) sets it off from "eye" or "ear": "L_eye", "eye-R", "r ear" (but not "rear", a paw).
  """
  if _normalise(name) in FACE_KEYPOINT_NAMES:
    return True
  parts = [p for p in re.split(r"[\s_\-]+", name.strip().lower()) if p]
  if len(parts) < 2:
    return False
  if parts[0] in _SIDES and _normalise("".join(parts[1:])) in _SIDED_PARTS:
    return True
  return parts[-1] in _SIDES and _normalise("".join(parts[:-1])) in _SIDED_PARTS


# --- boxes -----------------------------------------------------------------------------------


def keypoints_to_boxes(
  xy: np.ndarray,
  conf: np.ndarray,
  *,
  min_likelihood: float = DEFAULT_MIN_LIKELIHOOD,
  min_keypoints: int = DEFAULT_MIN_KEYPOINTS,
) -> np.ndarray:
  """Face boxes from face keypoints.

  Args:
    xy: F x A x N x 2 keypoint coordinates (frames, animals, keypoints; x, y in pixels), NaN
      where a keypoint is missing.
    conf: F x A x N confidences (DeepLabCut likelihood, SLEAP point score).
    min_likelihood: a keypoint counts when its confidence is >= this and both coordinates are
      finite (a NaN confidence never counts).
    min_keypoints: counted keypoints a box needs.

  Returns:
    F x A x 4 float64 boxes (x, y, w, h): squares of side BOX_MARGIN times the larger side of the
    counted keypoints' extent, centred BOX_CENTER_DY * side below the extent's centre; NaN rows
    where fewer than `min_keypoints` keypoints count. Not clipped to the frame.
  """
  xy = np.asarray(xy, dtype=np.float64)
  conf = np.asarray(conf, dtype=np.float64)
  if xy.ndim < 1 or xy.shape[-1] != 2 or xy.shape[:-1] != conf.shape:
    raise ValueError(f"xy must be conf's shape + (2,); got xy {xy.shape}, conf {conf.shape}")
  if min_keypoints < 1:
    raise ValueError(f"min_keypoints must be at least 1, got {min_keypoints}")
  counted = np.isfinite(xy).all(axis=-1) & (conf >= min_likelihood)
  x, y = xy[..., 0], xy[..., 1]
  has_box = counted.sum(axis=-1) >= min_keypoints
  # The extent of the counted keypoints; NaN (not inf) where there is no box.
  extent = []
  for v in (x, y):
    lo = np.where(counted, v, np.inf).min(axis=-1, initial=np.inf)
    hi = np.where(counted, v, -np.inf).max(axis=-1, initial=-np.inf)
    extent.append((np.where(has_box, lo, np.nan), np.where(has_box, hi, np.nan)))
  (x0, x1), (y0, y1) = extent
  side = BOX_MARGIN * np.maximum(x1 - x0, y1 - y0)
  cx = (x0 + x1) / 2
  cy = (y0 + y1) / 2 + BOX_CENTER_DY * side
  return np.stack([cx - side / 2, cy - side / 2, side, side], axis=-1)


def clip_box(box, width: int, height: int) -> tuple[int, int, int, int] | None:
  """(x, y, w, h) clipped to a width x height frame and rounded to whole pixels.

  Each edge is rounded to the nearest pixel (halves up). None when the box has a NaN (no face)
  or the clipped box is smaller than MIN_BOX_SIDE pixels on a side.
  """
  x, y, w, h = (float(v) for v in box)
  if not all(math.isfinite(v) for v in (x, y, w, h)):
    return None
  edges = []
  for lo, size, limit in ((x, w, width), (y, h, height)):
    a = min(max(lo, 0.0), float(limit))
    b = min(max(lo + size, 0.0), float(limit))
    edges.append((math.floor(a + 0.5), math.floor(b + 0.5)))
  (ix0, ix1), (iy0, iy1) = edges
  if ix1 - ix0 < MIN_BOX_SIDE or iy1 - iy0 < MIN_BOX_SIDE:
    return None
  return ix0, iy0, ix1 - ix0, iy1 - iy0


@dataclasses.dataclass
class Tracks:
  """The face boxes of one tracking file."""

  path: str  # the tracking file
  kind: str  # "deeplabcut", "sleap" or "csv"
  # DeepLabCut individuals / SLEAP track names / the CSV's animal values; [""] when single-animal.
  animals: list[str]
  boxes: np.ndarray  # F x A x 4 float64 (x, y, w, h), NaN = no face in that frame for that animal
  # The largest finite x and y of any keypoint (DeepLabCut, SLEAP) or box centre (CSV) in the
  # file, to catch a file made from a video of another resolution.
  max_xy: tuple[float, float]
  num_frames: int  # F: DeepLabCut rows, SLEAP frames, the CSV's largest frame + 1
  # True for DeepLabCut (a row per video frame, so F must be the video's frame count); False for
  # SLEAP (its analysis export ends at the last predicted frame) and the CSV: frames after the
  # file's last one have no box, and a file longer than the video is refused.
  exact_length: bool

  def box(self, frame: int, animal_index: int) -> np.ndarray:
    """The 4 floats (x, y, w, h) of a frame and animal; NaN for frames from F on."""
    frame, animal_index = int(frame), int(animal_index)
    if frame < 0:
      raise IndexError(f"frame {frame} < 0")
    if not 0 <= animal_index < len(self.animals):
      raise IndexError(f"animal_index {animal_index} not in [0, {len(self.animals)})")
    if frame >= self.boxes.shape[0]:
      return np.full(4, np.nan)
    return self.boxes[frame, animal_index].copy()


# --- reading ---------------------------------------------------------------------------------


def _require(module: str, path: str, what: str):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise TrackingError(
      f"{path}: reading {what} needs the Python package {module!r}, which is not installed "
      f"({e}); install it with: {INSTALL_HINT}"
    ) from e


def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise TrackingError(f"{path}: no such file; check the path of the tracking file")
  if not os.path.isfile(path):
    raise TrackingError(f"{path}: not a file; give the path of a tracking file")
  try:
    with open(path, "rb"):
      pass
  except OSError as e:
    raise TrackingError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from e


def _file_type(path: str) -> str:
  """ "hdf5" or "csv"; raises TrackingError for anything else."""
  _check_file(path)
  with open(path, "rb") as f:
    head = f.read(len(_HDF5_SIGNATURE))
  ext = os.path.splitext(path)[1].lower()
  if head == _HDF5_SIGNATURE or ext in _HDF5_EXTENSIONS:
    return "hdf5"
  if ext == ".csv":
    return "csv"
  raise TrackingError(f"{path}: not a tracking file ({ext or 'no'} extension); {ACCEPTED_FORMATS}")


def read_tracks(
  path,
  *,
  face_keypoints: Sequence[str] | None = None,
  min_likelihood: float = DEFAULT_MIN_LIKELIHOOD,
  min_keypoints: int = DEFAULT_MIN_KEYPOINTS,
  video: str | None = None,
  num_frames: int | None = None,
) -> Tracks:
  """Reads a tracking file into face boxes.

  .h5/.hdf5: a SLEAP analysis file when it has a `tracks` dataset, else DeepLabCut. .csv: a
  DeepLabCut CSV when its first cell is "scorer", else a plain box CSV, whose boxes are taken as
  written (not squared, no margin); in it, a row with an empty or NaN x, y, w or h, or a score
  below `min_likelihood`, means no face in that frame. In multi-animal files an animal without a
  box in any frame is left out of `animals`; a file without any box is an error.

  Args:
    path: the tracking file.
    face_keypoints: the keypoints (DeepLabCut bodyparts, SLEAP nodes) to build boxes from;
      None: those for which `is_face_keypoint` is true.
    min_likelihood: keypoints (and box CSV rows with a `score`) below this confidence are
      ignored.
    min_keypoints: confident face keypoints a frame needs for a box.
    video: for a box CSV with a `video` column, the video whose rows to take (its values are
      matched to it by exact path, then file name, then stem); ignored for other files.
    num_frames: the video's number of frames when known (None or 0: unknown); a box CSV's
      `frame` column must stay below it (below MAX_CSV_FRAMES when unknown), checked before its
      table is made. Other files are checked against the video by the caller.
  """
  path = os.fspath(path)
  if isinstance(face_keypoints, str):
    face_keypoints = [face_keypoints]
  if face_keypoints is not None and not face_keypoints:
    raise ValueError("face_keypoints is empty; pass None for the default face keypoints")
  args = dict(
    face_keypoints=face_keypoints, min_likelihood=min_likelihood, min_keypoints=min_keypoints
  )
  if _file_type(path) == "hdf5":
    return _read_hdf5(path, **args)
  header = _first_row(path)
  if header and header[0].strip().lower() == "scorer":
    return _read_dlc_csv(path, **args)
  return _read_box_csv(path, min_likelihood=min_likelihood, video=video, num_frames=num_frames)


def _select_keypoints(
  path: str, names: list[str], face_keypoints: Sequence[str] | None, min_keypoints: int
) -> list[int]:
  """Indices into `names` of the face keypoints."""
  listing = ", ".join(names) if names else "(none)"
  if face_keypoints is None:
    index = [i for i, name in enumerate(names) if is_face_keypoint(name)]
    if not index:
      raise TrackingError(
        f"{path}: none of its keypoints is a face keypoint (eyes, ears, nose or snout); its "
        f"keypoints: {listing}. Name the face keypoints with --face-keypoints"
      )
  else:
    missing = [k for k in face_keypoints if k not in names]
    if missing:
      raise TrackingError(
        f"{path}: no keypoint named {', '.join(missing)}; its keypoints: {listing}. Pass "
        "--face-keypoints with names from that list"
      )
    index = [names.index(k) for k in dict.fromkeys(face_keypoints)]
  if len(index) < min_keypoints:
    raise TrackingError(
      f"{path}: {len(index)} face keypoint(s) ({', '.join(names[i] for i in index)}) but a box "
      f"needs {min_keypoints}; lower --min-keypoints or name more with --face-keypoints (its "
      f"keypoints: {listing})"
    )
  return index


def _max_finite(values: np.ndarray) -> float:
  values = np.asarray(values, dtype=np.float64)
  m = np.where(np.isfinite(values), values, -np.inf).max(initial=-np.inf)
  return float(m) if np.isfinite(m) else math.nan


def _keypoint_tracks(
  path: str,
  kind: str,
  animals: list[str],
  multi_animal: bool,
  xy: np.ndarray,
  conf: np.ndarray,
  keypoint_names: list[str],
  max_xy: tuple[float, float],
  min_likelihood: float,
  min_keypoints: int,
) -> Tracks:
  """Tracks from the face keypoints (F x A x N x 2, F x A x N); drops animals without a box."""
  boxes = keypoints_to_boxes(xy, conf, min_likelihood=min_likelihood, min_keypoints=min_keypoints)
  found = np.isfinite(boxes).all(axis=-1).any(axis=0)
  if not found.any():
    raise TrackingError(
      f"{path}: no face box in any frame: in no frame has any animal {min_keypoints} of the face "
      f"keypoints {', '.join(keypoint_names)} with a confidence of at least {min_likelihood}. "
      "Check that this is the right file, or lower --min-likelihood / --min-keypoints, or name "
      "other keypoints with --face-keypoints"
    )
  if multi_animal and not found.all():
    boxes = boxes[:, found]
    animals = [a for a, keep in zip(animals, found) if keep]
  return Tracks(
    path=path,
    kind=kind,
    animals=list(animals),
    boxes=np.ascontiguousarray(boxes),
    max_xy=max_xy,
    num_frames=int(boxes.shape[0]),
    # SLEAP's analysis export stops at the last frame with a prediction, so only DeepLabCut's
    # table (a row for every frame of the video) must match the video's length.
    exact_length=kind == "deeplabcut",
  )


# SLEAP


def _read_hdf5(path: str, **args) -> Tracks:
  h5py = _require("h5py", path, "HDF5 tracking files")
  if not h5py.is_hdf5(path):
    raise TrackingError(
      f"{path}: not an HDF5 file (damaged, or not written as HDF5); " + ACCEPTED_FORMATS
    )
  try:
    with h5py.File(path, "r") as f:
      if isinstance(f.get("tracks"), h5py.Dataset):
        return _read_sleap(path, f, **args)
      if "instances" in f and "frames" in f:
        raise TrackingError(
          f"{path}: a SLEAP labels/predictions file (.slp), not an analysis file; export one with "
          f"`sleap-convert --format analysis {path}` and pass the .analysis.h5 file"
        )
  except OSError as e:
    raise TrackingError(f"{path}: cannot be read as HDF5 ({e}); " + ACCEPTED_FORMATS) from e
  return _read_dlc_hdf5(path, **args)


def _h5_strings(path: str, f, name: str) -> list[str]:
  values = np.asarray(f[name][()]).reshape(-1)
  out = []
  for v in values:
    if isinstance(v, bytes):
      try:
        v = v.decode("utf-8")
      except UnicodeDecodeError as e:
        raise TrackingError(f"{path}: dataset `{name}` is not UTF-8 text ({e})") from e
    out.append(str(v))
  return out


# The axis order of SLEAP's own analysis export (sleap-io's default `matlab` preset); sleap-io's
# `standard` and custom orders name their axes in each dataset's `dims` attribute.
_SLEAP_DIMS = {
  "tracks": ("track", "xy", "node", "frame"),
  "point_scores": ("track", "node", "frame"),
}


def _sleap_array(path, f, name: str) -> np.ndarray:
  """Dataset `name` of a SLEAP analysis file in SLEAP's axis order (`_SLEAP_DIMS`): a file whose
  dataset names its axes (`dims`, a JSON list, as sleap-io writes) is transposed by them."""
  data = np.asarray(f[name][()], dtype=np.float64)
  dims = f[name].attrs.get("dims")
  if dims is None:
    return data
  try:
    dims = json.loads(dims.decode() if isinstance(dims, bytes) else str(dims))
    order = [dims.index(d) for d in _SLEAP_DIMS[name]]
  except (ValueError, TypeError, AttributeError):
    order = None
  if order is None or len(dims) != data.ndim:
    raise TrackingError(
      f"{path}: dataset `{name}` names its axes {dims!r} (attribute `dims`), not an order of "
      f"{list(_SLEAP_DIMS[name])}; export the file again with `sio export ... -o FILE.h5`"
    )
  return data.transpose(order)


def _read_sleap(path, f, *, face_keypoints, min_likelihood, min_keypoints) -> Tracks:
  tracks = _sleap_array(path, f, "tracks")
  if tracks.ndim != 4 or tracks.shape[1] != 2:
    raise TrackingError(
      f"{path}: dataset `tracks` has the shape {tracks.shape}, not (tracks, 2, nodes, frames) as "
      "in SLEAP analysis files; export the file again with `sleap-convert --format analysis`"
    )
  n_tracks, _, n_nodes, n_frames = tracks.shape
  if "node_names" not in f:
    raise TrackingError(
      f"{path}: has a `tracks` dataset but no `node_names`; not a SLEAP analysis file? "
      + ACCEPTED_FORMATS
    )
  nodes = _h5_strings(path, f, "node_names")
  if len(nodes) != n_nodes:
    raise TrackingError(
      f"{path}: {len(nodes)} node names for {n_nodes} nodes in `tracks`; the file is damaged"
    )
  names = _h5_strings(path, f, "track_names") if "track_names" in f else []
  if not any(names):  # not tracked: SLEAP writes no track names, sleap-io an empty one
    if n_tracks > 1:
      raise TrackingError(
        f"{path}: {n_tracks} instance columns but no track names: its instances were not "
        "tracked, so a column is not the same animal from frame to frame and per-animal rows, "
        "plots and summaries would mix the rats. Run SLEAP's tracker first (e.g. `sleap-track "
        "predictions.slp --tracking.tracker simple --tracking.target_instance_count N -o "
        "tracked.slp`, N the number of rats; check the identities in the SLEAP GUI), then export "
        "the tracked file with `sleap-convert --format analysis`"
      )
    if len(names) > n_tracks:
      raise TrackingError(
        f"{path}: {len(names)} track names for {n_tracks} tracks in `tracks`; the file is damaged"
      )
    animals = [""]
  elif len(names) == n_tracks:
    animals = [name or f"track_{i}" for i, name in enumerate(names)]
  else:
    raise TrackingError(
      f"{path}: {len(names)} track names for {n_tracks} tracks in `tracks`; the file is damaged"
    )
  index = _select_keypoints(path, nodes, face_keypoints, min_keypoints)
  xy_all = tracks.transpose(3, 0, 2, 1)  # frames x tracks x nodes x 2
  if "point_scores" in f:
    scores = _sleap_array(path, f, "point_scores")
    if scores.shape != (n_tracks, n_nodes, n_frames):
      raise TrackingError(
        f"{path}: dataset `point_scores` has the shape {scores.shape}, not (tracks, nodes, "
        f"frames) = {(n_tracks, n_nodes, n_frames)}; the file is damaged"
      )
    conf = scores.transpose(2, 0, 1)[:, :, index]
  else:  # user-labelled data only: every point placed by a person
    conf = np.ones((n_frames, n_tracks, len(index)))
  xy = xy_all[:, :, index]
  # A point placed by a person (a user instance) has coordinates but no score: it counts.
  conf = np.where(np.isnan(conf) & np.isfinite(xy).all(axis=-1), 1.0, conf)
  max_xy = (_max_finite(xy_all[..., 0]), _max_finite(xy_all[..., 1]))
  return _keypoint_tracks(
    path,
    "sleap",
    animals,
    animals != [""],
    xy,
    conf,
    [nodes[i] for i in index],
    max_xy,
    min_likelihood,
    min_keypoints,
  )


# DeepLabCut


def _read_dlc_hdf5(path: str, **args) -> Tracks:
  pd = _require("pandas", path, "DeepLabCut .h5 files")
  tables_hint = (
    f"{path}: reading DeepLabCut .h5 files needs PyTables (the package 'tables'), which is not "
    f"installed; install it with: {INSTALL_HINT}"
  )
  try:
    with pd.HDFStore(path, mode="r") as store:
      keys = list(store.keys())
      if not keys:
        raise TrackingError(
          f"{path}: an HDF5 file with neither SLEAP's `tracks` dataset nor a DeepLabCut table; "
          + ACCEPTED_FORMATS
        )
      if "/df_with_missing" in keys:
        key = "/df_with_missing"
      elif len(keys) == 1:
        key = keys[0]
      else:
        raise TrackingError(
          f"{path}: several pandas tables ({', '.join(keys)}) and none named df_with_missing, "
          "the one DeepLabCut writes; " + ACCEPTED_FORMATS
        )
      df = store.get(key)
  except ImportError as e:
    raise TrackingError(f"{tables_hint} ({e})") from e
  except TrackingError:
    raise
  except Exception as e:  # pandas/PyTables raise many kinds for a damaged file
    raise TrackingError(
      f"{path}: cannot be read as a DeepLabCut file ({type(e).__name__}: {e}); " + ACCEPTED_FORMATS
    ) from e
  return _read_dlc_frame(path, df, **args)


def _first_row(path: str) -> list[str]:
  rows = _csv_rows(path, limit=1)
  return rows[0][1] if rows else []


def _read_dlc_csv(path: str, **args) -> Tracks:
  head = [row for _, row in _csv_rows(path, limit=len(_DLC_HEADER_ROWS))]
  labels = []
  for row in head:
    label = row[0].strip().lower() if row else ""
    if label not in _DLC_HEADER_ROWS:
      break
    labels.append(label)
  if tuple(labels) not in (("scorer", "bodyparts", "coords"), _DLC_HEADER_ROWS):
    raise TrackingError(
      f"{path}: a DeepLabCut CSV starts with the rows scorer, [individuals,] bodyparts, coords; "
      f"this one with {', '.join(labels)}. Use the CSV as DeepLabCut wrote it, or the .h5 file"
    )
  header = head[: len(labels)]
  if len({len(row) for row in header}) != 1:
    raise TrackingError(
      f"{path}: its header rows ({', '.join(labels)}) differ in length; use the CSV as "
      "DeepLabCut wrote it, or the .h5 file"
    )
  pd = _require("pandas", path, "DeepLabCut CSV files")
  # The header rows are parsed here, not by pandas: with a multi-row header, pandas takes a first
  # frame without any keypoint (a row of empty cells) for a row of index names.
  columns = pd.MultiIndex.from_arrays([row[1:] for row in header], names=labels)
  try:
    df = pd.read_csv(path, header=None, skiprows=len(labels), index_col=0)
  except Exception as e:  # pandas raises many kinds for a malformed CSV
    raise TrackingError(
      f"{path}: cannot be read as a DeepLabCut CSV ({type(e).__name__}: {e}); use the file as "
      "DeepLabCut wrote it, or the .h5 file"
    ) from e
  if df.shape[1] != len(columns):
    raise TrackingError(
      f"{path}: {df.shape[1]} data columns for {len(columns)} header columns; use the file as "
      "DeepLabCut wrote it, or the .h5 file"
    )
  df.columns = columns
  return _read_dlc_frame(path, df, **args)


def _read_dlc_frame(path, df, *, face_keypoints, min_likelihood, min_keypoints) -> Tracks:
  columns = getattr(df, "columns", None)
  if getattr(columns, "nlevels", 0) not in (3, 4):
    raise TrackingError(
      f"{path}: a table without DeepLabCut's columns (scorer, [individuals,] bodyparts, "
      "coords); " + ACCEPTED_FORMATS
    )
  multi_animal = columns.nlevels == 4
  table: dict[tuple[str, str], dict[str, int]] = {}
  for position, key in enumerate(columns):
    individual = str(key[1]) if multi_animal else ""
    part, coord = str(key[-2]), str(key[-1])
    coords = table.setdefault((individual, part), {})
    if coord in coords:
      raise TrackingError(
        f"{path}: two columns for {'/'.join(filter(None, (individual, part, coord)))} (two "
        "scorers?); use a file of one DeepLabCut model"
      )
    coords[coord] = position
  for (individual, part), coords in table.items():
    missing = [c for c in ("x", "y", "likelihood") if c not in coords]
    if missing:
      what = "/".join(filter(None, (individual, part)))
      raise TrackingError(
        f"{path}: no {', '.join(missing)} column for {what}; DeepLabCut's analysis output has x, "
        "y and likelihood for every bodypart (labelled training data, CollectedData_*, has no "
        "likelihood and cannot be used)"
      )
  individuals = list(dict.fromkeys(i for i, _ in table if i != _DLC_SINGLE or not multi_animal))
  if not individuals:
    raise TrackingError(
      f"{path}: only the individual `single` (unique bodyparts), no animal; "
      "face boxes come from the animals' bodyparts"
    )
  parts = list(dict.fromkeys(p for i, p in table if i in individuals))
  index = np.asarray(df.index)
  num_frames = len(df)
  if index.dtype.kind not in "iu" or not np.array_equal(index, np.arange(num_frames)):
    first = index[0] if num_frames else "none"
    raise TrackingError(
      f"{path}: the rows are not the frames 0..{num_frames - 1} (the first is {first}); use "
      "the output of deeplabcut.analyze_videos, one row per video frame"
    )
  try:
    values = df.to_numpy(dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise TrackingError(
      f"{path}: holds values that are not numbers ({e}); use the file as DeepLabCut wrote it"
    ) from e
  chosen = _select_keypoints(path, parts, face_keypoints, min_keypoints)
  xy = np.full((num_frames, len(individuals), len(chosen), 2), np.nan)
  conf = np.full((num_frames, len(individuals), len(chosen)), np.nan)
  for a, individual in enumerate(individuals):
    for n, k in enumerate(chosen):
      coords = table.get((individual, parts[k]))
      if coords is not None:
        xy[:, a, n, 0] = values[:, coords["x"]]
        xy[:, a, n, 1] = values[:, coords["y"]]
        conf[:, a, n] = values[:, coords["likelihood"]]
  xs = [c["x"] for c in table.values()]
  ys = [c["y"] for c in table.values()]
  max_xy = (_max_finite(values[:, xs]), _max_finite(values[:, ys]))
  return _keypoint_tracks(
    path,
    "deeplabcut",
    individuals if multi_animal else [""],
    multi_animal,
    xy,
    conf,
    [parts[k] for k in chosen],
    max_xy,
    min_likelihood,
    min_keypoints,
  )


# Box CSVs


def _csv_rows(path: str, limit: int | None = None) -> list[tuple[int, list[str]]]:
  """(line number, cells) of a CSV's non-blank rows, the header included."""
  _check_file(path)
  rows = []
  try:
    with open(path, newline="", encoding="utf-8-sig") as f:
      reader = csv.reader(f)
      for row in reader:
        if "".join(row).strip():
          rows.append((reader.line_num, row))
          if limit is not None and len(rows) >= limit:
            break
  except UnicodeDecodeError as e:
    raise TrackingError(f"{path}: not a text (UTF-8) CSV file ({e}); " + ACCEPTED_FORMATS) from e
  except csv.Error as e:
    raise TrackingError(f"{path}: not a readable CSV file ({e}); " + ACCEPTED_FORMATS) from e
  except OSError as e:
    raise TrackingError(f"{path}: cannot be read ({e.strerror or e})") from e
  return rows


def _box_table(path: str, key: str, required: tuple[str, ...], layout: str):
  """The header's column positions and the data rows of a box CSV."""
  rows = _csv_rows(path)
  if not rows:
    raise TrackingError(f"{path}: empty; a box CSV needs the header {layout} and one row a box")
  header = [cell.strip().lower() for cell in rows[0][1]]
  columns: dict[str, int] = {}
  for i, name in enumerate(header):
    if not name:  # an unnamed column (a trailing comma): not one of ours
      continue
    if name in columns:
      raise TrackingError(f"{path}: the column `{name}` appears twice in the header")
    columns[name] = i
  other_key = "frame" if key == "image" else "image"
  if other_key in columns and key not in columns:
    kind = "images" if other_key == "image" else "video frames"
    raise TrackingError(
      f"{path}: keyed by `{other_key}`, so it gives boxes for {kind}; here a box CSV needs the "
      f"header {layout}"
    )
  missing = [c for c in required if c not in columns]
  if missing:
    raise TrackingError(
      f"{path}: no column {', '.join(missing)}; a box CSV needs the header {layout}. "
      + ACCEPTED_FORMATS
    )
  data = rows[1:]
  for line, row in data:
    if len(row) != len(header):
      raise TrackingError(
        f"{path}, line {line}: {len(row)} fields, but the header has {len(header)}; "
        "one value per column"
      )
  return columns, data


def _number(path: str, line: int, column: str, text: str) -> float:
  """A cell as a float; NaN for an empty cell or NaN (no box)."""
  text = text.strip()
  if not text or text.lower() == "nan":
    return math.nan
  try:
    value = float(text)
  except ValueError:
    value = None
  if value is None or math.isinf(value):
    raise TrackingError(f"{path}, line {line}: column `{column}` is {text!r}, not a number")
  return value


def _number_column(path: str, rows, columns: dict[str, int], column: str) -> np.ndarray:
  """A column of a box CSV's rows as float64, as `_number` reads each cell."""
  i = columns[column]
  cells = [row[i].strip() for _, row in rows]
  try:  # fast: all cells numbers (or empty / NaN)
    values = np.fromiter(map(float, (c or "nan" for c in cells)), np.float64, len(cells))
    if not np.isinf(values).any():
      return values
  except ValueError:
    pass
  return np.array([_number(path, line, column, c) for (line, _), c in zip(rows, cells)])


def _box_row(path, line, row, columns) -> tuple[tuple[float, float, float, float], float]:
  box = tuple(_number(path, line, c, row[columns[c]]) for c in ("x", "y", "w", "h"))
  for c, v in zip("wh", box[2:]):
    if v < 0:
      raise TrackingError(
        f"{path}, line {line}: column `{c}` is {v:g}, a negative box size; w and h are the box's "
        "width and height in pixels"
      )
  score = _number(path, line, "score", row[columns["score"]]) if "score" in columns else 1.0
  return box, score


def _basename(p: str) -> str:
  return re.split(r"[\\/]", p)[-1]


def _stem(p: str) -> str:
  return os.path.splitext(_basename(p))[0]


def _same_path(a: str, b: str) -> bool:
  if a == b or os.path.normpath(a) == os.path.normpath(b):
    return True
  return os.path.abspath(a) == os.path.abspath(b)


# How a `video` value (a box CSV's column, the VIDEO of VIDEO=FILE) names a video, best first.
_VIDEO_NAME_LEVELS = (
  _same_path,
  lambda a, b: _basename(a) == _basename(b),
  lambda a, b: _stem(a) == _stem(b),
)


def _videos_named(value: str, videos: Sequence[str]) -> list[str]:
  """The videos that `value` names at the best level that names any."""
  if not value.strip():
    return []
  for same in _VIDEO_NAME_LEVELS:
    hits = [v for v in videos if same(value, v)]
    if hits:
      return hits
  return []


def _values_naming(values: Sequence[str], video: str) -> list[str]:
  """The `video` values that name `video`, at the best level that names it."""
  for same in _VIDEO_NAME_LEVELS:
    hits = [v for v in values if v.strip() and same(v, video)]
    if hits:
      return hits
  return []


def _short_list(items: Sequence[str], n: int = 8) -> str:
  items = list(items)
  more = f", ... ({len(items)} in all)" if len(items) > n else ""
  return ", ".join(items[:n]) + more


def _read_box_csv(
  path: str, *, min_likelihood: float, video: str | None, num_frames: int | None = None
) -> Tracks:
  layout = "video,frame,x,y,w,h (optional: animal, score)"
  columns, rows = _box_table(path, "frame", ("frame", "x", "y", "w", "h"), layout)
  if "video" in columns:
    i = columns["video"]
    for line, row in rows:
      if not row[i].strip():
        raise TrackingError(
          f"{path}, line {line}: column `video` is empty; write the video's path or file name "
          "on every row (or drop the column when the file holds one video's boxes)"
        )
    values = list(dict.fromkeys(row[i].strip() for _, row in rows))
    if video is None:
      if len(values) > 1:
        raise TrackingError(
          f"{path}: boxes for several videos ({_short_list(values)}); say which video the boxes "
          "are for"
        )
      chosen = set(values)
    else:
      chosen = set(_values_naming(values, video))
      if not chosen:
        raise TrackingError(
          f"{path}: no rows for the video {video}; its `video` column names "
          f"{_short_list(values)}. Write the video's path or file name in that column"
        )
      if len(chosen) > 1:
        raise TrackingError(
          f"{path}: several values of its `video` column ({', '.join(sorted(chosen))}) name the "
          f"video {video}; write the videos' full paths in that column"
        )
    rows = [(line, row) for line, row in rows if row[i].strip() in chosen]
  if not rows:
    raise TrackingError(f"{path}: no boxes (only a header); one row a box: {layout}")
  lines = np.array([line for line, _ in rows], dtype=np.int64)
  frame_values = _number_column(path, rows, columns, "frame")
  bad = ~np.isfinite(frame_values) | (frame_values < 0)
  bad[~bad] = frame_values[~bad] != np.floor(frame_values[~bad])
  if bad.any():
    r = int(np.argmax(bad))
    raise TrackingError(
      f"{path}, line {lines[r]}: column `frame` is {rows[r][1][columns['frame']].strip()!r}, not "
      "a frame number (a whole number from 0, the video's first frame)"
    )
  last = int(np.argmax(frame_values))
  limit = num_frames or MAX_CSV_FRAMES
  if frame_values[last] >= limit:
    cell = rows[last][1][columns["frame"]].strip()
    if num_frames:
      why = (
        f"but the video{f' {video}' if video else ''} has {num_frames} frames (0 to "
        f"{num_frames - 1}): it is the box file of another video (or another cut), or its "
        "`frame` column holds timestamps; give the right file as VIDEO=FILE, or write 0-based "
        "frame numbers"
      )
    else:
      why = (
        f"beyond {MAX_CSV_FRAMES:,} frames (27.7 hours at 100 fps): the `frame` column must "
        "hold 0-based frame numbers, not timestamps (e.g. milliseconds); convert them with the "
        "video's frame rate (frame = round(seconds * fps))"
      )
    raise TrackingError(f"{path}, line {lines[last]}: column `frame` is {cell!r}, {why}")
  frames = frame_values.astype(np.int64)
  boxes = np.stack([_number_column(path, rows, columns, c) for c in ("x", "y", "w", "h")], axis=1)
  for k, c in ((2, "w"), (3, "h")):
    negative = boxes[:, k] < 0
    if negative.any():
      r = int(np.argmax(negative))
      raise TrackingError(
        f"{path}, line {lines[r]}: column `{c}` is {boxes[r, k]:g}, a negative box size; w and h "
        "are the box's width and height in pixels"
      )
  if "score" in columns:
    scores = _number_column(path, rows, columns, "score")
  else:
    scores = np.ones(len(rows))
  animal_col = columns.get("animal")
  animal_of_row = [row[animal_col].strip() for _, row in rows] if animal_col is not None else None
  animals = list(dict.fromkeys(animal_of_row)) if animal_of_row is not None else [""]
  if animal_of_row is not None:
    animal_index = {a: i for i, a in enumerate(animals)}
    rows_animal = np.array([animal_index[a] for a in animal_of_row], dtype=np.int64)
  else:
    rows_animal = np.zeros(len(rows), dtype=np.int64)
  # One row per frame and animal: the first line that repeats an earlier one.
  keys = frames * len(animals) + rows_animal
  order = np.argsort(keys, kind="stable")
  repeats = order[1:][keys[order[1:]] == keys[order[:-1]]]
  if repeats.size:
    r = int(repeats.min())
    first = int(order[np.searchsorted(keys[order], keys[r])])
    what = "video, frame and animal" if animal_col is not None else "video and frame"
    raise TrackingError(
      f"{path}, line {lines[r]}: the same {what} as line {lines[first]}; one box per frame and "
      "animal (give several animals' boxes an `animal` column)"
    )
  usable = np.isfinite(boxes).all(axis=1) & (scores >= min_likelihood)
  # The resolution check reads the box centres: a detector's or a hand-drawn box may run
  # over the frame's edge (clip_box clips it), its centre does not.
  centres = boxes[:, :2] + boxes[:, 2:] / 2
  max_xy = (_max_finite(centres[:, 0]), _max_finite(centres[:, 1]))
  if not usable.any():
    raise TrackingError(
      f"{path}: no face box in any frame: every row"
      + (f" for the video {video}" if video is not None and "video" in columns else "")
      + f" lacks a box or has a score below {min_likelihood}; check the file, or lower "
      "--min-likelihood"
    )
  length = int(frames.max()) + 1
  out = np.full((length, len(animals), 4), np.nan)
  out[frames[usable], rows_animal[usable]] = boxes[usable]
  if animal_col is not None:
    found = np.isfinite(out).all(axis=-1).any(axis=0)
    out = out[:, found]
    animals = [a for a, keep in zip(animals, found) if keep]
  return Tracks(
    path=path,
    kind="csv",
    animals=animals,
    boxes=out,
    max_xy=max_xy,
    num_frames=length,
    exact_length=False,
  )


def read_image_boxes(
  path, *, min_likelihood: float = DEFAULT_MIN_LIKELIHOOD, lines: dict[str, int] | None = None
) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
  """A box CSV keyed by image path: image,x,y,w,h[,animal][,score].

  Returns {image path as written: [(animal, (x, y, w, h)), ...]} in the file's order; animal ""
  without an `animal` column. Rows without a box (empty or NaN x/y/w/h) or with a score below
  `min_likelihood` give no box, but their image keeps its (then maybe empty) list: the file
  says that image has no face. One row per image and animal. `lines`, when given, receives
  {image path as written: the line of its first row} (for messages about an entry).
  """
  path = os.fspath(path)
  layout = "image,x,y,w,h (optional: animal, score)"
  columns, rows = _box_table(path, "image", ("image", "x", "y", "w", "h"), layout)
  animal_col = columns.get("animal")
  out: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
  seen: dict[tuple[str, str], int] = {}
  for line, row in rows:
    image = row[columns["image"]].strip()
    if not image:
      raise TrackingError(f"{path}, line {line}: column `image` is empty; give the image's path")
    animal = row[animal_col].strip() if animal_col is not None else ""
    if (image, animal) in seen:
      what = "image and animal" if animal_col is not None else "image"
      raise TrackingError(
        f"{path}, line {line}: the same {what} as line {seen[image, animal]}; one box per image "
        "and animal (give several animals' boxes an `animal` column)"
      )
    seen[image, animal] = line
    if lines is not None:
      lines.setdefault(image, line)
    box, score = _box_row(path, line, row, columns)
    boxes = out.setdefault(image, [])
    if all(math.isfinite(v) for v in box) and score >= min_likelihood:
      boxes.append((animal, box))
  return out


# --- which file for which video --------------------------------------------------------------


def _name_has_stem(name: str, stem: str) -> bool:
  """Whether a tracking file's name is of the video with this stem.

  DeepLabCut: the name starts with the stem ("<stem>DLC_resnet50_...h5"), but not when that
  cuts a number ("rat1" does not start "rat10DLC_..."). SLEAP: the stem occurs in the name
  delimited by non-alphanumerics ("labels.000_<stem>.analysis.h5").
  """
  if name.startswith(stem):
    rest = name[len(stem) :]
    if not (stem[-1].isdigit() and rest[:1].isdigit()):
      return True
  pattern = rf"(?<![0-9A-Za-z]){re.escape(stem)}(?![0-9A-Za-z])"
  return re.search(pattern, name) is not None


def _video_for_file(file: str, videos: Sequence[str]) -> str:
  name = _basename(file)
  best: list[str] = []
  for v in videos:
    stem = _stem(v)
    if not stem or not _name_has_stem(name, stem):
      continue
    if not best or len(stem) > len(_stem(best[0])):
      best = [v]
    elif len(stem) == len(_stem(best[0])):
      best.append(v)
  if not best:
    raise TrackingError(
      f"{file}: its name names none of the videos ({_short_list(videos)}); pair it with its "
      f"video explicitly: --boxes VIDEO={file}"
    )
  if len(best) > 1:
    raise TrackingError(
      f"{file}: its name fits several videos equally well ({', '.join(best)}); pair it with its "
      f"video explicitly: --boxes VIDEO={file}"
    )
  return best[0]


def _split_pair(arg: str, videos: Sequence[str]) -> tuple[str, str] | None:
  """(video, file) for a "VIDEO=FILE" argument; None for a plain path."""
  if "=" not in arg:
    return None
  for i, char in enumerate(arg):
    if char != "=":
      continue
    left, right = arg[:i], arg[i + 1 :]
    hits = _videos_named(left, videos)
    if len(hits) > 1:
      raise TrackingError(
        f"{right}: `{left}` in {arg} names several videos ({', '.join(hits)}); write the "
        "video's path as given"
      )
    if hits:
      return hits[0], right
  if os.path.exists(arg):
    return None
  left = arg.split("=", 1)[0]
  raise TrackingError(
    f"{arg}: no such file, and as VIDEO=FILE, `{left}` is none of the videos "
    f"({_short_list(videos)}); write VIDEO as the video's path or file name"
  )


def _box_csv_videos(file: str) -> list[str] | None:
  """The `video` values of a plain box CSV; None for any other file (DeepLabCut CSV, HDF5, a
  box CSV without a `video` column)."""
  if _file_type(file) != "csv":
    return None
  rows = _csv_rows(file)
  if not rows or rows[0][1][0].strip().lower() == "scorer":
    return None
  header = [cell.strip().lower() for cell in rows[0][1]]
  if "video" not in header:
    return None
  i = header.index("video")
  return list(dict.fromkeys(row[i].strip() for _, row in rows[1:] if i < len(row)))


def match_tracking_files(videos: Sequence[str], files: Sequence[str]) -> dict[str, str]:
  """Which tracking file belongs to which video.

  Args:
    videos: the video paths.
    files: the --boxes arguments: "VIDEO=FILE" (VIDEO: the video's path, file name or stem) or
      plain paths. A plain path is the file of the video whose stem starts its name (DeepLabCut:
      "<stem>DLC_resnet50_...shuffle1_100000.h5", "..._filtered.h5", "..._el.h5"; not when that
      cuts a number: "rat1" does not start "rat10...") or occurs in it between non-alphanumerics
      (SLEAP: "<labels>.000_<stem>.analysis.h5"); of several, the longest stem. A box CSV with a
      `video` column is the file of every video named there (by exact path, then file name,
      then stem); values naming none of the videos are ignored.

  Returns:
    {video: tracking file} in the order of `videos`, for the videos that have one.
  """
  videos = list(dict.fromkeys(os.fspath(v) for v in videos))
  found: dict[str, str] = {}

  def assign(video: str, file: str) -> None:
    if video in found and found[video] != file:
      raise TrackingError(
        f"{file}: the video {video} already has the tracking file {found[video]}; give one "
        "tracking file per video"
      )
    found[video] = file

  for arg in files:
    arg = os.fspath(arg)
    pair = _split_pair(arg, videos)
    if pair is not None:
      _check_file(pair[1])
      assign(*pair)
      continue
    _check_file(arg)
    values = _box_csv_videos(arg)
    if values is None:
      assign(_video_for_file(arg, videos), arg)
      continue
    named = 0
    for value in values:
      hits = _videos_named(value, videos)
      if len(hits) > 1:
        raise TrackingError(
          f"{arg}: the `video` value {value!r} names several videos ({', '.join(hits)}); write "
          "the videos' paths as given in that column"
        )
      for video in hits:
        assign(video, arg)
        named += 1
    if not named:
      raise TrackingError(
        f"{arg}: its `video` column names none of the videos ({_short_list(videos)}); it names "
        f"{_short_list(values)}. Write the videos' paths or file names in that column"
      )
  return {v: found[v] for v in videos if v in found}
