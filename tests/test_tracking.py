"""Face boxes from tracking files (painseeker_jax/tracking.py): DeepLabCut (.h5, .csv, single and
multi-animal), SLEAP analysis files, plain box CSVs, matching files to videos, and the errors.

The fixtures are written in the tools' own formats with pandas and h5py: a face (nose, eyes,
ears) moving across a 640 x 480 frame, with keypoints missing or below the likelihood cutoff in
some frames. Expected boxes are computed here, one frame at a time, from the rule in the spec.
"""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from painseeker_jax import tracking
from painseeker_jax.tracking import TrackingError

SCORER = "DLC_resnet50_ratfaceMay1shuffle1_100000"
PARTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "rear", "tail_base"]
FACE = PARTS[:5]
# Offsets of the keypoints from the nose (pixels; y down). "rear" (a paw) and "tail_base" are
# far from the face, so a box that used them would be far off.
OFFSETS = {
  "nose": (0.0, 0.0),
  "left_eye": (-40.0, -35.0),
  "right_eye": (25.0, -45.0),
  "left_ear": (-70.0, -80.0),
  "right_ear": (20.0, -95.0),
  "rear": None,  # fixed at (600, 470)
  "tail_base": None,  # fixed at (500, 400)
}
NUM_FRAMES = 6


def _face_keypoints(shift=(0.0, 0.0)):
  """xy (F, N, 2) and likelihood (F, N) of one animal, over PARTS.

  Frame 0: all confident. 1: right_ear below the cutoff (0.5). 2: both eyes below: three
  confident face keypoints. 3: only nose and left_eye: too few. 4: the face keypoints missing
  (NaN). 5: every likelihood exactly at the cutoff 0.6 (counts).
  """
  xy = np.zeros((NUM_FRAMES, len(PARTS), 2))
  for f in range(NUM_FRAMES):
    nose = (120.0 + 80.0 * f + shift[0], 150.0 + 30.0 * f + shift[1])
    for n, part in enumerate(PARTS):
      off = OFFSETS[part]
      if off is None:
        xy[f, n] = (600.0, 470.0) if part == "rear" else (500.0, 400.0)
      else:
        xy[f, n] = (nose[0] + off[0], nose[1] + off[1] + 100.0)
  conf = np.full((NUM_FRAMES, len(PARTS)), 0.95)
  conf[1, PARTS.index("right_ear")] = 0.5
  conf[2, [PARTS.index("left_eye"), PARTS.index("right_eye")]] = [0.1, 0.2]
  conf[3, [PARTS.index(p) for p in ("right_eye", "left_ear", "right_ear")]] = 0.3
  xy[4, :5] = np.nan
  conf[4, :5] = np.nan
  conf[5] = 0.6
  return xy, conf


def _expected_boxes(xy, conf, parts=FACE, min_likelihood=0.6, min_keypoints=3):
  """The spec's box, one frame at a time: square, 1.24 x the larger side of the confident
  keypoints' extent, centred 0.03 side below the extent's centre."""
  out = np.full((len(xy), 4), np.nan)
  for f in range(len(xy)):
    pts = [
      xy[f, PARTS.index(p)]
      for p in parts
      if conf[f, PARTS.index(p)] >= min_likelihood and np.isfinite(xy[f, PARTS.index(p)]).all()
    ]
    if len(pts) < min_keypoints:
      continue
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    side = 1.24 * max(max(xs) - min(xs), max(ys) - min(ys))
    cx = (min(xs) + max(xs)) / 2
    cy = (min(ys) + max(ys)) / 2 + 0.03 * side
    out[f] = (cx - side / 2, cy - side / 2, side, side)
  return out


def _dlc_frame(animals, parts=PARTS):
  """A DeepLabCut analysis DataFrame. animals: {individual: (xy, conf)}; one animal named None
  gives the single-animal layout (scorer, bodyparts, coords)."""
  import pandas as pd

  multi = list(animals) != [None]
  columns, blocks = [], []
  for individual, (xy, conf) in animals.items():
    for n, part in enumerate(parts):
      for coord, values in (("x", xy[:, n, 0]), ("y", xy[:, n, 1]), ("likelihood", conf[:, n])):
        key = (SCORER, individual, part, coord) if multi else (SCORER, part, coord)
        columns.append(key)
        blocks.append(values)
  names = ["scorer", "individuals", "bodyparts", "coords"] if multi else None
  names = names or ["scorer", "bodyparts", "coords"]
  index = pd.MultiIndex.from_tuples(columns, names=names)
  return pd.DataFrame(np.stack(blocks, axis=1), columns=index)


def _write_dlc(df, path):
  if path.endswith(".csv"):
    df.to_csv(path)
  else:
    df.to_hdf(path, key="df_with_missing", format="table", mode="w")
  return path


def _write_sleap(path, xy, conf, nodes, track_names, dims=None):
  """A SLEAP analysis file: xy (F, T, N, 2), conf (F, T, N), stored transposed as SLEAP does;
  with `dims` ("standard": sleap-io's `--h5-dim-order standard`) as sleap-io writes it, the axes
  in that order and named in each dataset's `dims` attribute."""
  import h5py

  occupancy = np.isfinite(xy).any(axis=(2, 3)).astype(np.uint8)  # F x T
  with h5py.File(path, "w") as f:
    if dims is None:
      f.create_dataset("tracks", data=xy.transpose(1, 3, 2, 0), compression="gzip")
      f.create_dataset("point_scores", data=conf.transpose(1, 2, 0))
    else:
      assert dims == "standard"
      f.create_dataset("tracks", data=xy, compression="gzip")
      f["tracks"].attrs["dims"] = json.dumps(["frame", "track", "node", "xy"])
      f.create_dataset("point_scores", data=conf)
      f["point_scores"].attrs["dims"] = json.dumps(["frame", "track", "node"])
      f.attrs["preset"] = "standard"
    f.create_dataset("track_occupancy", data=occupancy)
    instance = np.where(np.isfinite(conf), conf, 0.0).mean(axis=2)  # any score will do here
    f.create_dataset("instance_scores", data=instance.T)
    f.create_dataset("node_names", data=np.array([n.encode() for n in nodes], dtype="S"))
    f.create_dataset("track_names", data=np.array([t.encode() for t in track_names], dtype="S"))
    f.create_dataset("edge_names", data=np.array([[b"nose", b"left_eye"]], dtype="S"))
    f.create_dataset("labels_path", data="rat.slp")
    f.create_dataset("video_path", data="rat1.mp4")
  return path


def _write_csv(path, text):
  with open(path, "w") as f:
    f.write(text)
  return str(path)


def _touch(path):
  open(path, "w").close()
  return str(path)


def _assert_boxes(actual, expected):
  assert actual.dtype == np.float64
  np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6, equal_nan=True)


# --- keypoint names, box geometry ------------------------------------------------------------


@pytest.mark.parametrize(
  "name",
  [
    "left_eye", "Right Eye", "leftEye", "eye_left", "EyeRight", "leye", "reye", "eyeL", "L_eye",
    "eye-R", "l eye", "eye", "ear", "left_ear", "RightEar", "lear", "earR", "R_ear", "ear-l",
    "nose", "Nose", "nose_tip", "noseTip", "snout", "Snout-Tip",
  ],
)  # fmt: skip
def test_face_keypoint_names(name):
  assert tracking.is_face_keypoint(name)


@pytest.mark.parametrize(
  "name",
  ["rear", "Rear", "rear_paw", "RearPaw", "tail_base", "eyebrow", "nosepoke", "earring", "l_nose",
   "head", "neck", "left_forepaw", "spine1", "", "x_eye"],
)  # fmt: skip
def test_not_face_keypoint_names(name):
  assert not tracking.is_face_keypoint(name)


def test_box_constants():
  assert tracking.DEFAULT_MIN_LIKELIHOOD == 0.6
  assert tracking.DEFAULT_MIN_KEYPOINTS == 3
  assert tracking.BOX_MARGIN == 1.24
  assert tracking.BOX_CENTER_DY == 0.03


def test_keypoints_to_boxes_geometry():
  # Extent 100 wide, 40 high, centre (150, 220): side 124, centre moved down 0.03 * 124.
  xy = np.array([[[[100.0, 200.0], [200.0, 240.0], [130.0, 210.0]]]])
  conf = np.ones((1, 1, 3))
  box = tracking.keypoints_to_boxes(xy, conf, min_likelihood=0.6, min_keypoints=3)
  assert box.shape == (1, 1, 4) and box.dtype == np.float64
  side = 124.0
  np.testing.assert_allclose(
    box[0, 0], [150 - side / 2, 220 + 0.03 * side - side / 2, side, side], atol=1e-9
  )
  # A tall extent: the side follows the height.
  tall = xy[..., ::-1].copy()
  box = tracking.keypoints_to_boxes(tall, conf, min_likelihood=0.6, min_keypoints=3)
  assert box[0, 0, 2] == box[0, 0, 3] == pytest.approx(side)
  # Too few confident or finite keypoints: NaN.
  conf2 = np.array([[[1.0, 0.59, 1.0]]])
  assert np.isnan(tracking.keypoints_to_boxes(xy, conf2, min_likelihood=0.6, min_keypoints=3)).all()
  xy_nan = xy.copy()
  xy_nan[0, 0, 1, 0] = np.nan
  assert np.isnan(
    tracking.keypoints_to_boxes(xy_nan, conf, min_likelihood=0.6, min_keypoints=3)
  ).all()
  nan_conf = np.array([[[1.0, np.nan, 1.0]]])
  assert np.isnan(
    tracking.keypoints_to_boxes(xy, nan_conf, min_likelihood=0.6, min_keypoints=3)
  ).all()
  # ... but enough with a lower min_keypoints; the unconfident point is not in the extent.
  box = tracking.keypoints_to_boxes(xy, conf2, min_likelihood=0.6, min_keypoints=2)
  np.testing.assert_allclose(box[0, 0, 2], 1.24 * 30.0)
  with pytest.raises(ValueError):
    tracking.keypoints_to_boxes(xy, conf[..., :2], min_likelihood=0.6, min_keypoints=3)


def test_keypoints_to_boxes_vectorised_matches_per_frame():
  xy, conf = _face_keypoints()
  face = [PARTS.index(p) for p in FACE]
  # 20,000 frames x 2 animals: the fixture's frames tiled, the second animal shifted.
  reps = 20_000 // NUM_FRAMES + 1
  big_xy = np.stack([np.tile(xy, (reps, 1, 1)), np.tile(xy + 7.0, (reps, 1, 1))], axis=1)
  big_conf = np.stack([np.tile(conf, (reps, 1))] * 2, axis=1)
  boxes = tracking.keypoints_to_boxes(
    big_xy[:, :, face], big_conf[:, :, face], min_likelihood=0.6, min_keypoints=3
  )
  assert boxes.shape == (reps * NUM_FRAMES, 2, 4)
  expected = _expected_boxes(xy, conf)
  _assert_boxes(boxes[-NUM_FRAMES:, 0], expected)
  _assert_boxes(boxes[:NUM_FRAMES, 1], _expected_boxes(xy + 7.0, conf))
  np.testing.assert_array_equal(boxes[:, :, 2], boxes[:, :, 3])


def test_clip_box():
  assert tracking.clip_box((-10.0, 20.0, 100.0, 100.0), 640, 480) == (0, 20, 90, 100)
  assert tracking.clip_box((600.4, 450.6, 100.0, 100.0), 640, 480) == (600, 451, 40, 29)
  assert tracking.clip_box((10.5, 10.5, 20.0, 20.0), 640, 480) == (11, 11, 20, 20)
  clipped = tracking.clip_box(np.array([1.2, 2.7, 50.1, 60.0]), 640, 480)
  assert clipped == (1, 3, 50, 60) and all(type(v) is int for v in clipped)
  assert tracking.clip_box((np.nan,) * 4, 640, 480) is None
  assert tracking.clip_box((10.0, 10.0, 7.4, 20.0), 640, 480) is None  # 7 px wide
  assert tracking.clip_box((10.0, 10.0, 8.0, 8.0), 640, 480) == (10, 10, 8, 8)
  assert tracking.clip_box((700.0, 10.0, 50.0, 50.0), 640, 480) is None  # outside the frame
  assert tracking.clip_box((635.0, 10.0, 50.0, 50.0), 640, 480) is None  # 5 px left inside


# --- DeepLabCut ------------------------------------------------------------------------------


@pytest.fixture(params=["h5", "csv"])
def dlc_ext(request):
  if request.param == "h5":
    pytest.importorskip("tables")
  return request.param


def test_deeplabcut_single_animal(tmp_path, dlc_ext):
  xy, conf = _face_keypoints()
  path = _write_dlc(_dlc_frame({None: (xy, conf)}), str(tmp_path / f"rat1{SCORER}.{dlc_ext}"))
  tracks = tracking.read_tracks(path)
  assert tracks.path == path and tracks.kind == "deeplabcut"
  assert tracks.animals == [""]
  assert tracks.num_frames == NUM_FRAMES and tracks.exact_length
  assert tracks.boxes.shape == (NUM_FRAMES, 1, 4)
  expected = _expected_boxes(xy, conf)
  assert np.isnan(expected[3]).all() and np.isnan(expected[4]).all()  # the fixture's intent
  _assert_boxes(tracks.boxes[:, 0], expected)
  ok = ~np.isnan(tracks.boxes[:, 0, 0])
  np.testing.assert_array_equal(tracks.boxes[ok, 0, 2], tracks.boxes[ok, 0, 3])
  assert tracks.max_xy == (600.0, 470.0)  # "rear" (not a face keypoint) counts here
  np.testing.assert_array_equal(tracks.box(0, 0), tracks.boxes[0, 0])
  assert np.isnan(tracks.box(NUM_FRAMES, 0)).all() and np.isnan(tracks.box(10**6, 0)).all()
  with pytest.raises(IndexError):
    tracks.box(0, 1)

  # The likelihood cutoff and the number of keypoints.
  loose = tracking.read_tracks(path, min_likelihood=0.4, min_keypoints=2)
  _assert_boxes(loose.boxes[:, 0], _expected_boxes(xy, conf, min_likelihood=0.4, min_keypoints=2))
  assert not np.isnan(loose.boxes[3, 0]).any()  # two keypoints are enough now
  strict = tracking.read_tracks(path, min_likelihood=0.7)
  assert np.isnan(strict.boxes[5, 0]).all()  # frame 5 sits at 0.6
  # Chosen keypoints, exactly those (a non-face one included).
  chosen = ["nose", "left_ear", "tail_base"]
  mine = tracking.read_tracks(path, face_keypoints=chosen)
  _assert_boxes(mine.boxes[:, 0], _expected_boxes(xy, conf, parts=chosen))


def test_deeplabcut_multi_animal(tmp_path, dlc_ext):
  xy1, conf1 = _face_keypoints()
  xy2, conf2 = _face_keypoints(shift=(-60.0, 40.0))
  conf2[0] = 0.1  # rat2 not found in frame 0
  xy3 = np.full_like(xy1, np.nan)  # rat3 never seen: dropped
  conf3 = np.full_like(conf1, np.nan)
  animals = {"rat1": (xy1, conf1), "rat2": (xy2, conf2), "rat3": (xy3, conf3)}
  df = _dlc_frame(animals)
  # The unique bodyparts live under the individual "single": a lamp in the corner.
  lamp = _dlc_frame(
    {"single": (np.full((NUM_FRAMES, 1, 2), [630.0, 475.0]), np.ones((6, 1)))}, ["lamp"]
  )
  df = df.join(lamp)
  assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
  path = _write_dlc(df, str(tmp_path / f"cage2{SCORER}_el.{dlc_ext}"))
  tracks = tracking.read_tracks(path)
  assert tracks.animals == ["rat1", "rat2"]
  assert tracks.boxes.shape == (NUM_FRAMES, 2, 4)
  _assert_boxes(tracks.boxes[:, 0], _expected_boxes(xy1, conf1))
  _assert_boxes(tracks.boxes[:, 1], _expected_boxes(xy2, conf2))
  assert np.isnan(tracks.boxes[0, 1]).all()
  assert tracks.max_xy == (630.0, 475.0)
  # A bodypart of "single" is not one of the animals' keypoints.
  with pytest.raises(TrackingError, match="no keypoint named lamp"):
    tracking.read_tracks(path, face_keypoints=["nose", "lamp"])


def test_deeplabcut_stitched_tracks_key(tmp_path):
  """DeepLabCut's stitched tracklets (..._el.h5) are stored under the key "tracks" (a pandas
  table, so an HDF5 group, not SLEAP's dataset)."""
  pytest.importorskip("tables")
  xy, conf = _face_keypoints()
  path = str(tmp_path / f"rat1{SCORER}_el.h5")
  _dlc_frame({"rat1": (xy, conf)}).to_hdf(path, key="tracks", format="table", mode="w")
  tracks = tracking.read_tracks(path)
  assert tracks.kind == "deeplabcut" and tracks.animals == ["rat1"]
  _assert_boxes(tracks.boxes[:, 0], _expected_boxes(xy, conf))


# --- SLEAP -----------------------------------------------------------------------------------


def test_sleap_multi_track(tmp_path):
  xy1, conf1 = _face_keypoints()
  xy2, conf2 = _face_keypoints(shift=(50.0, 60.0))
  xy2[5] = np.nan  # track 2 lost in the last frame
  conf2[5] = np.nan
  empty = np.full_like(xy1, np.nan), np.full_like(conf1, np.nan)
  xy = np.stack([xy1, xy2, empty[0]], axis=1)
  conf = np.stack([conf1, conf2, empty[1]], axis=1)
  path = _write_sleap(
    str(tmp_path / "labels.v001.000_rat1.analysis.h5"), xy, conf, PARTS, ["a", "b", "c"]
  )
  tracks = tracking.read_tracks(path)
  assert tracks.kind == "sleap" and not tracks.exact_length and tracks.num_frames == NUM_FRAMES
  assert tracks.animals == ["a", "b"]  # "c" is empty throughout: dropped
  _assert_boxes(tracks.boxes[:, 0], _expected_boxes(xy1, conf1))
  _assert_boxes(tracks.boxes[:, 1], _expected_boxes(xy2, conf2))
  assert tracks.max_xy == (600.0, 470.0)

  # Untracked: no track names. One column (as SLEAP and sleap-io export untracked
  # predictions; sleap-io writes one empty name) is one animal.
  for names in ([], [""]):
    path = _write_sleap(str(tmp_path / "single.analysis.h5"), xy[:, :1], conf[:, :1], PARTS, names)
    tracks = tracking.read_tracks(path)
    assert tracks.animals == [""], names
    _assert_boxes(tracks.boxes[:, 0], _expected_boxes(xy1, conf1))


@pytest.mark.parametrize("names", [[], ["", ""]])
def test_sleap_several_untracked_columns_are_refused(tmp_path, names):
  """Untracked instance columns are no identities across frames: per-animal rows, plots and
  summaries would mix the rats, so the file is refused with what to run."""
  xy1, conf1 = _face_keypoints()
  xy2, conf2 = _face_keypoints(shift=(50.0, 60.0))
  xy, conf = np.stack([xy1, xy2], axis=1), np.stack([conf1, conf2], axis=1)
  path = _write_sleap(str(tmp_path / "untracked.analysis.h5"), xy, conf, PARTS, names)
  _raises(
    lambda: tracking.read_tracks(path),
    path,
    "2 instance columns but no track names",
    "not tracked",
    "sleap-track",
    "--tracking.tracker",
    "sleap-convert --format analysis",
  )


def test_sleap_io_axis_orders(tmp_path):
  """sleap-io's `standard` order (frames first) names its axes in `dims`: read by them."""
  xy1, conf1 = _face_keypoints()
  xy2, conf2 = _face_keypoints(shift=(50.0, 60.0))
  xy, conf = np.stack([xy1, xy2], axis=1), np.stack([conf1, conf2], axis=1)
  path = _write_sleap(str(tmp_path / "std.analysis.h5"), xy, conf, PARTS, ["a", "b"], "standard")
  tracks = tracking.read_tracks(path)
  assert tracks.animals == ["a", "b"] and tracks.num_frames == NUM_FRAMES
  _assert_boxes(tracks.boxes[:, 0], _expected_boxes(xy1, conf1))
  _assert_boxes(tracks.boxes[:, 1], _expected_boxes(xy2, conf2))

  import h5py

  with h5py.File(path, "a") as f:
    f["tracks"].attrs["dims"] = json.dumps(["frame", "animal", "node", "xy"])
  _raises(lambda: tracking.read_tracks(path), path, "`tracks`", "'animal'", "attribute `dims`")


def test_sleap_user_labelled_points_count(tmp_path):
  """Points placed by a person have coordinates but a NaN score: they count."""
  xy, conf = _face_keypoints()
  conf = np.where(np.isfinite(xy).all(axis=-1), np.nan, conf)
  path = _write_sleap(str(tmp_path / "user.analysis.h5"), xy[:, None], conf[:, None], PARTS, [])
  tracks = tracking.read_tracks(path)
  _assert_boxes(tracks.boxes[:, 0], _expected_boxes(xy, np.ones_like(conf)))


# --- box CSVs --------------------------------------------------------------------------------


def test_box_csv_single_video(tmp_path):
  path = _write_csv(
    tmp_path / "boxes.csv",
    "video,frame,x,y,w,h\nrat1.mp4,0,10,20,100,80\nrat1.mp4,2,15.5,25,90,95.25\n"
    "rat1.mp4,5,-5,400,60,100\nrat1.mp4,6,,,,\n",
  )
  tracks = tracking.read_tracks(path)
  assert tracks.kind == "csv" and not tracks.exact_length
  assert tracks.animals == [""]
  assert tracks.num_frames == 7 and tracks.boxes.shape == (7, 1, 4)
  np.testing.assert_array_equal(tracks.boxes[0, 0], [10, 20, 100, 80])  # as given, not squared
  np.testing.assert_array_equal(tracks.boxes[2, 0], [15.5, 25, 90, 95.25])
  np.testing.assert_array_equal(tracks.boxes[5, 0], [-5, 400, 60, 100])
  assert np.isnan(tracks.boxes[[1, 3, 4, 6], 0]).all()
  assert np.isnan(tracks.box(100, 0)).all()
  assert tracks.max_xy == (60.5, 450.0)  # box centres: a box may run over the frame's edge
  # The `video` argument picks the same rows, by path, file name or stem.
  for video in ("rat1.mp4", "/data/rat1.mp4", "rat1.avi"):
    np.testing.assert_array_equal(
      tracking.read_tracks(path, video=video).boxes, tracks.boxes, err_msg=video
    )
  with pytest.raises(TrackingError, match=r"boxes\.csv: no rows for the video rat2\.mp4"):
    tracking.read_tracks(path, video="rat2.mp4")


def test_box_csv_with_an_empty_video_cell_is_refused(tmp_path):
  """A spreadsheet that writes the video's name on its first row only."""
  path = _write_csv(
    tmp_path / "boxes.csv",
    "video,frame,x,y,w,h\nrat1.mp4,0,10,20,100,80\n,1,10,20,100,80\n,2,10,20,100,80\n",
  )
  for video in (None, "rat1.mp4"):
    with pytest.raises(TrackingError, match=r"boxes\.csv, line 3: column `video` is empty"):
      tracking.read_tracks(path, video=video)


def test_box_csv_without_video_column(tmp_path):
  path = _write_csv(tmp_path / "rat1_faces.csv", "frame,x,y,w,h\n3,1,2,30,40\n")
  tracks = tracking.read_tracks(path, video="/v/rat1.mp4")
  assert tracks.num_frames == 4
  np.testing.assert_array_equal(tracks.boxes[3, 0], [1, 2, 30, 40])


def test_box_csv_several_videos_animals_scores(tmp_path):
  path = _write_csv(
    tmp_path / "detections.csv",
    "video,frame,x,y,w,h,animal,score\n"
    "/data/a.mp4,0,10,10,50,50,ratA,0.9\n"
    "/data/a.mp4,0,200,10,40,40,ratB,0.95\n"
    "/data/a.mp4,1,12,10,50,50,ratA,0.59\n"
    "/data/a.mp4,1,202,10,40,40,ratB,0.6\n"
    "/data/a.mp4,2,14,10,50,50,ratC,0.2\n"
    "/data/b.mp4,0,1,2,30,30,ratA,0.99\n"
    "/data/b.mp4,4,5,6,30,30,ratA,0.99\n",
  )
  a = tracking.read_tracks(path, video="/data/a.mp4")
  assert a.animals == ["ratA", "ratB"]  # ratC: below the cutoff throughout, dropped
  assert a.num_frames == 3 and a.boxes.shape == (3, 2, 4)
  np.testing.assert_array_equal(a.boxes[0], [[10, 10, 50, 50], [200, 10, 40, 40]])
  assert np.isnan(a.boxes[1, 0]).all()  # score 0.59 < 0.6
  np.testing.assert_array_equal(a.boxes[1, 1], [202, 10, 40, 40])  # 0.6 counts
  assert np.isnan(a.boxes[2]).all()
  assert a.max_xy == (222.0, 35.0)  # centres of all rows of the video, whatever their score
  b = tracking.read_tracks(path, video="videos/b.mp4")  # by file name
  assert b.animals == ["ratA"] and b.num_frames == 5
  np.testing.assert_array_equal(b.boxes[4, 0], [5, 6, 30, 30])
  assert tracking.read_tracks(path, video="b.avi").num_frames == 5  # by stem
  loose = tracking.read_tracks(path, video="/data/a.mp4", min_likelihood=0.1)
  assert loose.animals == ["ratA", "ratB", "ratC"]
  with pytest.raises(TrackingError, match=r"detections\.csv: boxes for several videos"):
    tracking.read_tracks(path)


def test_image_boxes(tmp_path):
  path = _write_csv(
    tmp_path / "faces.csv",
    "image,x,y,w,h,animal,score\n"
    "imgs/a.jpg,1,2,30,40,ratA,0.9\n"
    "imgs/a.jpg,100,2,30,40,ratB,0.8\n"
    "imgs/b.png,5,6,70,80,ratA,0.3\n"
    "C:\\data\\c.jpg,0.5,1.5,20,20,ratA,1\n",
  )
  boxes = tracking.read_image_boxes(path)
  assert boxes == {
    "imgs/a.jpg": [("ratA", (1.0, 2.0, 30.0, 40.0)), ("ratB", (100.0, 2.0, 30.0, 40.0))],
    "imgs/b.png": [],  # listed, but its only box is below the cutoff
    "C:\\data\\c.jpg": [("ratA", (0.5, 1.5, 20.0, 20.0))],
  }
  assert tracking.read_image_boxes(path, min_likelihood=0.2)["imgs/b.png"] == [
    ("ratA", (5.0, 6.0, 70.0, 80.0))
  ]
  lines = {}
  tracking.read_image_boxes(path, lines=lines)  # the line of each image's first row
  assert lines == {"imgs/a.jpg": 2, "imgs/b.png": 4, "C:\\data\\c.jpg": 5}
  plain = _write_csv(tmp_path / "plain.csv", "image,x,y,w,h\nx.jpg,1,2,3,4\n")
  assert tracking.read_image_boxes(plain) == {"x.jpg": [("", (1.0, 2.0, 3.0, 4.0))]}
  dup = _write_csv(
    tmp_path / "dup.csv", "image,x,y,w,h\nx.jpg,1,2,3,4\ny.jpg,1,2,3,4\nx.jpg,5,6,7,8\n"
  )
  with pytest.raises(TrackingError, match=r"dup\.csv, line 4: the same image as line 2"):
    tracking.read_image_boxes(dup)
  with pytest.raises(TrackingError, match=r"keyed by `frame`"):
    tracking.read_image_boxes(_write_csv(tmp_path / "v.csv", "video,frame,x,y,w,h\nv,0,1,2,3,4\n"))
  with pytest.raises(TrackingError, match=r"keyed by `image`"):
    tracking.read_tracks(plain)


# --- matching files to videos ----------------------------------------------------------------


def test_match_by_name(tmp_path):
  videos = ["/v/rat1.mp4", "/v/rat10.mp4", "/v/rat1_day2.mp4", "/w/rat2.avi", "/w/rat3.mov"]
  files = [
    _touch(tmp_path / f"rat1{SCORER}.h5"),  # DeepLabCut
    _touch(tmp_path / f"rat10{SCORER}_filtered.h5"),  # rat1 also starts it, but cuts "10"
    _touch(tmp_path / f"rat1_day2{SCORER}_el.csv"),  # the longest stem wins over rat1
    _touch(tmp_path / "labels.v001.000_rat2.analysis.h5"),  # SLEAP
  ]
  assert tracking.match_tracking_files(videos, files) == {
    "/v/rat1.mp4": files[0],
    "/v/rat10.mp4": files[1],
    "/v/rat1_day2.mp4": files[2],
    "/w/rat2.avi": files[3],
  }
  # rat10's file is not rat1's, when rat10 is not among the videos.
  with pytest.raises(TrackingError, match=r"rat10DLC.*names none of the videos.*VIDEO="):
    tracking.match_tracking_files(["/v/rat1.mp4"], [files[1]])


def test_match_explicit_pairs(tmp_path):
  f1 = _touch(tmp_path / "whatever.h5")
  f2 = _touch(tmp_path / "other.csv")
  f3 = _touch(tmp_path / "third.h5")
  videos = ["/v/rat1.mp4", "/v/rat2.mp4", "/w/rat3.mp4"]
  got = tracking.match_tracking_files(videos, [f"/v/rat1.mp4={f1}", f"rat2.mp4={f2}", f"rat3={f3}"])
  assert got == {"/v/rat1.mp4": f1, "/v/rat2.mp4": f2, "/w/rat3.mp4": f3}
  # An explicit pair decides where a name would be ambiguous.
  videos = ["/a/rat1.mp4", "/b/rat1.mp4"]
  f = _touch(tmp_path / f"rat1{SCORER}.h5")
  with pytest.raises(TrackingError, match=r"rat1DLC.*several videos.*--boxes VIDEO="):
    tracking.match_tracking_files(videos, [f])
  assert tracking.match_tracking_files(videos, [f"/b/rat1.mp4={f}"]) == {"/b/rat1.mp4": f}
  with pytest.raises(TrackingError, match=r"several videos"):
    tracking.match_tracking_files(videos, [f"rat1.mp4={f}"])
  with pytest.raises(TrackingError, match=r"nope\.mp4=.*no such file.*none of the videos"):
    tracking.match_tracking_files(videos, [f"nope.mp4={f}"])
  with pytest.raises(TrackingError, match=r"missing\.h5: no such file"):
    tracking.match_tracking_files(videos, [f"/b/rat1.mp4={tmp_path / 'missing.h5'}"])


def test_match_two_files_for_one_video(tmp_path):
  a = _touch(tmp_path / f"rat1{SCORER}.h5")
  b = _touch(tmp_path / f"rat1{SCORER}_filtered.h5")
  with pytest.raises(TrackingError, match=r"_filtered\.h5: the video /v/rat1\.mp4 already has"):
    tracking.match_tracking_files(["/v/rat1.mp4"], [a, b])
  assert tracking.match_tracking_files(["/v/rat1.mp4"], [a, f"/v/rat1.mp4={a}"]) == {
    "/v/rat1.mp4": a
  }


def test_match_box_csv_serves_several_videos(tmp_path):
  csv_path = _write_csv(
    tmp_path / "yolo_faces.csv",
    "video,frame,x,y,w,h\n/v/rat1.mp4,0,1,2,30,30\nrat10.mp4,0,1,2,30,30\n"
    "rat1_day2,3,1,2,30,30\nunrelated.mp4,0,1,2,30,30\n",
  )
  videos = ["/v/rat1.mp4", "/x/rat10.mp4", "/v/rat1_day2.avi", "/v/rat4.mp4"]
  sleap = _touch(tmp_path / "p.000_rat4.analysis.h5")
  got = tracking.match_tracking_files(videos, [csv_path, sleap])
  assert got == {
    "/v/rat1.mp4": csv_path,
    "/x/rat10.mp4": csv_path,
    "/v/rat1_day2.avi": csv_path,
    "/v/rat4.mp4": sleap,
  }
  # ... and each video then reads its own rows.
  assert tracking.read_tracks(csv_path, video="/v/rat1_day2.avi").num_frames == 4
  # The file and another one for the same video.
  other = _touch(tmp_path / f"rat10{SCORER}.h5")
  with pytest.raises(TrackingError, match=r"already has the tracking file .*yolo_faces\.csv"):
    tracking.match_tracking_files(videos, [csv_path, other])
  with pytest.raises(TrackingError, match=r"yolo_faces\.csv: its `video` column names none"):
    tracking.match_tracking_files(["/v/rat7.mp4"], [csv_path])
  # A video column value naming two videos.
  with pytest.raises(TrackingError, match=r"yolo_faces\.csv: the `video` value 'rat10\.mp4'"):
    tracking.match_tracking_files(["/x/rat10.mp4", "/y/rat10.mp4"], [csv_path])


# --- errors ----------------------------------------------------------------------------------


def _raises(fn, *patterns):
  with pytest.raises(TrackingError) as info:
    fn()
  for p in patterns:
    assert p in str(info.value), (p, str(info.value))
  return str(info.value)


def test_errors_unreadable_or_unknown_files(tmp_path):
  missing = str(tmp_path / "missing.h5")
  _raises(lambda: tracking.read_tracks(missing), missing, "no such file")
  _raises(lambda: tracking.read_tracks(str(tmp_path)), str(tmp_path), "not a file")
  txt = _write_csv(tmp_path / "notes.txt", "hello\n")
  _raises(lambda: tracking.read_tracks(txt), txt, "not a tracking file", "DeepLabCut", "SLEAP")
  fake = _write_csv(tmp_path / "fake.h5", "not hdf5\n")
  _raises(lambda: tracking.read_tracks(fake), fake, "not an HDF5 file", "accepted are")
  import h5py

  other = str(tmp_path / "other.h5")
  with h5py.File(other, "w") as f:
    f["images"] = np.zeros((2, 3))
  if importlib.util.find_spec("tables") is not None:  # pandas reads it, with PyTables
    _raises(lambda: tracking.read_tracks(other), other, "neither SLEAP", "accepted are")
  slp = str(tmp_path / "labels.slp")
  with h5py.File(slp, "w") as f:
    f["frames"] = np.zeros(3)
    f["instances"] = np.zeros(3)
  _raises(lambda: tracking.read_tracks(slp), slp, "sleap-convert --format analysis")
  binary = str(tmp_path / "binary.csv")
  with open(binary, "wb") as f:
    f.write(b"\xff\xfe\x00\x81video")
  _raises(lambda: tracking.read_tracks(binary), binary, "not a text (UTF-8) CSV")
  empty = _write_csv(tmp_path / "empty.csv", "")
  _raises(lambda: tracking.read_tracks(empty), empty, "empty")


def test_errors_keypoint_names(tmp_path):
  xy, conf = _face_keypoints()
  path = _write_dlc(_dlc_frame({None: (xy, conf)}), str(tmp_path / "rat.csv"))
  msg = _raises(
    lambda: tracking.read_tracks(path, face_keypoints=["nose", "Left_Eye"]),
    path,
    "no keypoint named Left_Eye",
    "--face-keypoints",
  )
  assert "left_eye, right_eye" in msg  # the file's names
  body = ["tail_base", "spine", "rear"]
  path = _write_dlc(_dlc_frame({None: (xy[:, :3], conf[:, :3])}, body), str(tmp_path / "b.csv"))
  _raises(
    lambda: tracking.read_tracks(path),
    path,
    "none of its keypoints is a face keypoint",
    "tail_base, spine, rear",
    "--face-keypoints",
  )
  sleap = _write_sleap(str(tmp_path / "s.analysis.h5"), xy[:, None], conf[:, None], PARTS, [])
  _raises(lambda: tracking.read_tracks(sleap, face_keypoints=["snout"]), sleap, "snout", "nose")
  _raises(
    lambda: tracking.read_tracks(sleap, min_keypoints=6),
    sleap,
    "5 face keypoint(s)",
    "needs 6",
  )


def test_error_no_face_box_in_any_frame(tmp_path, dlc_ext):
  xy, conf = _face_keypoints()
  low = np.where(np.isnan(conf), np.nan, 0.3)
  path = _write_dlc(_dlc_frame({None: (xy, low)}), str(tmp_path / f"low.{dlc_ext}"))
  _raises(lambda: tracking.read_tracks(path), path, "no face box in any frame", "0.6")
  nan = np.full_like(xy, np.nan), np.full_like(conf, np.nan)
  multi = _dlc_frame({"rat1": nan, "rat2": nan})
  path = _write_dlc(multi, str(tmp_path / f"nan.{dlc_ext}"))
  _raises(lambda: tracking.read_tracks(path), path, "no face box in any frame")
  sleap = _write_sleap(
    str(tmp_path / "s.analysis.h5"), nan[0][:, None], nan[1][:, None], PARTS, ["a"]
  )
  _raises(lambda: tracking.read_tracks(sleap), sleap, "no face box in any frame")
  csv_path = _write_csv(tmp_path / "c.csv", "video,frame,x,y,w,h,score\nv.mp4,0,1,2,30,30,0.1\n")
  _raises(lambda: tracking.read_tracks(csv_path), csv_path, "no face box in any frame", "score")


def test_error_deeplabcut_labelled_data(tmp_path):
  """CollectedData_*.csv (training labels) has x and y but no likelihood."""
  import pandas as pd

  cols = pd.MultiIndex.from_product(
    [["Experimenter"], ["nose", "left_eye"], ["x", "y"]], names=["scorer", "bodyparts", "coords"]
  )
  df = pd.DataFrame(np.ones((2, 4)), columns=cols)
  path = str(tmp_path / "CollectedData_Experimenter.csv")
  df.to_csv(path)
  _raises(lambda: tracking.read_tracks(path), path, "no likelihood column for nose")


def test_errors_box_csv(tmp_path):
  def check(name, text, *patterns):
    path = _write_csv(tmp_path / name, text)
    _raises(lambda: tracking.read_tracks(path), path, *patterns)

  check("cols.csv", "video,frame,x,width,height\nv,0,1,2,3\n", "no column y, w, h", "video,frame")
  check("other.csv", "a,b\n1,2\n", "no column frame, x, y, w, h", "DeepLabCut")
  check("nan.csv", "video,frame,x,y,w,h\nv,0,1,2,3,4\nv,1,1,two,3,4\n", "line 3", "`y`", "'two'")
  check("frame.csv", "video,frame,x,y,w,h\nv,1.5,1,2,3,4\n", "line 2", "`frame`", "'1.5'")
  check("negf.csv", "video,frame,x,y,w,h\nv,-1,1,2,3,4\n", "line 2", "`frame`")
  check(
    "neg.csv", "video,frame,x,y,w,h\nv,0,1,2,3,4\n\nv,1,1,2,-3,4\n", "line 4", "`w`", "negative"
  )
  check("inf.csv", "video,frame,x,y,w,h\nv,0,inf,2,3,4\n", "line 2", "`x`")
  check("fields.csv", "video,frame,x,y,w,h\nv,0,1,2,3\n", "line 2", "5 fields")
  check(
    "dup.csv",
    "video,frame,x,y,w,h,animal\nv,0,1,2,3,4,a\nv,0,1,2,3,4,b\nv,1,1,2,3,4,a\nv,0,5,5,5,5,a\n",
    "line 5",
    "line 2",
    "same video, frame and animal",
  )
  check("dup2.csv", "video,frame,x,y,w,h\nv,0,1,2,3,4\nv,0,1,2,3,4\n", "line 3", "`animal` column")
  check("header.csv", "video,frame,x,y,w,h\n", "no boxes")


def test_box_csv_frame_beyond_the_video_is_refused_before_its_table(tmp_path):
  """The boxes are a dense frames x animals x 4 table: a `frame` column of timestamps (here
  milliseconds since 1970) would ask for terabytes. It is refused naming the line, before the
  table is made: against the video's frame count when known, else MAX_CSV_FRAMES."""
  text = "video,frame,x,y,w,h\nv,0,1,2,3,4\nv,1700000000000,1,2,3,4\nv,33,1,2,3,4\n"
  path = _write_csv(tmp_path / "ms.csv", text)
  _raises(
    lambda: tracking.read_tracks(path),
    f"{path}, line 3: column `frame` is '1700000000000'",
    "10,000,000 frames",
    "not timestamps",
  )
  assert tracking.MAX_CSV_FRAMES == 10_000_000
  short = _write_csv(tmp_path / "s.csv", "frame,x,y,w,h\n0,1,2,3,4\n100,1,2,3,4\n99,1,2,3,4\n")
  _raises(
    lambda: tracking.read_tracks(short, video="/v/rat1.mp4", num_frames=100),
    f"{short}, line 3: column `frame` is '100'",
    "the video /v/rat1.mp4 has 100 frames (0 to 99)",
    "VIDEO=FILE",
  )
  assert tracking.read_tracks(short, num_frames=101).num_frames == 101
  assert tracking.read_tracks(short).num_frames == 101  # frame count unknown: the limit only


def test_errors_missing_packages(tmp_path, monkeypatch):
  xy, conf = _face_keypoints()
  sleap = _write_sleap(str(tmp_path / "s.analysis.h5"), xy[:, None], conf[:, None], PARTS, [])
  dlc_csv = _write_dlc(_dlc_frame({None: (xy, conf)}), str(tmp_path / "d.csv"))
  hint = 'pip install "painseeker-jax[tracking]"'
  monkeypatch.setitem(sys.modules, "h5py", None)
  _raises(lambda: tracking.read_tracks(sleap), sleap, "h5py", hint)
  monkeypatch.setitem(sys.modules, "pandas", None)
  _raises(lambda: tracking.read_tracks(dlc_csv), dlc_csv, "pandas", hint)


def test_error_missing_pytables(tmp_path, monkeypatch):
  pytest.importorskip("tables")
  xy, conf = _face_keypoints()
  path = _write_dlc(_dlc_frame({None: (xy, conf)}), str(tmp_path / "d.h5"))
  monkeypatch.setitem(sys.modules, "tables", None)
  _raises(
    lambda: tracking.read_tracks(path), path, "PyTables", 'pip install "painseeker-jax[tracking]"'
  )


def test_module_imports_no_heavy_packages():
  """JAX, TensorFlow and tfds never; pandas and h5py only inside the readers."""
  import subprocess

  code = (
    "import sys; import painseeker_jax.tracking; "
    "print(sorted(m for m in ('jax', 'tensorflow', 'tensorflow_datasets', 'pandas', 'h5py') "
    "if m in sys.modules))"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == "[]"


def test_deeplabcut_csv_first_frame_empty(tmp_path):
  """A first frame without any keypoint (a row of empty cells) stays frame 0; pandas alone would
  take it for a row of index names."""
  xy, conf = _face_keypoints()
  xy[0], conf[0] = np.nan, np.nan
  path = _write_dlc(_dlc_frame({"rat1": (xy, conf)}), str(tmp_path / "first_empty.csv"))
  tracks = tracking.read_tracks(path)
  assert tracks.num_frames == NUM_FRAMES
  _assert_boxes(tracks.boxes[:, 0], _expected_boxes(xy, conf))
