"""A cage video made from the synthetic twin's faces, with its tracking files in the real formats.

For the tests and benchmark of `painseeker predict --boxes`, and for a lab to try the
video workflow without a video of its own. Each animal is a twin face (`synthetic.render`,
frontal, no occluder) pasted at `face_px` pixels on a larger cage-like frame and moved
along a straight path; its five face landmarks (eyes, ears, nose) move with it, so the
face box of every frame is known (`Scene.face_boxes`: where the face crop was pasted).
Frames can be made blurred (out of focus: the whole frame, Gaussian), dark (the whole
frame dimmed) or faceless for an animal (it leaves the view: no keypoints).

Writers, each in the format its tool writes:
  * `write_video`: H.264 (libx264, near-lossless) or any PyAV codec;
  * `write_deeplabcut`: DeepLabCut's pandas table (scorer / [individuals] / bodyparts /
    coords = x, y, likelihood), `.h5` (key "df_with_missing", PyTables "table" format, as
    DeepLabCut saves it) or `.csv`;
  * `write_sleap`: a SLEAP analysis HDF5 file (`tracks` n_tracks x 2 x n_nodes x n_frames,
    `point_scores`, `node_names`, `track_names`, `track_occupancy`, `instance_scores`);
  * `write_box_csv`: the plain `video,frame,x,y,w,h,animal,score` CSV.

  python -m tfds_ratspain.cage_video --out demo/ [--frames 300 --animals 2] [--overwrite]
writes demo/cage.mp4 and its three tracking files (`OUTPUT_NAMES`); existing files of those
names are refused unless --overwrite. Every writer writes to a temporary name in the
destination's folder and renames it into place, so a file is either whole or absent.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFilter

from tfds_ratspain.ratspain import synthetic

# The twin's landmarks that outline the face, named as a DeepLabCut/SLEAP project would.
KEYPOINTS = ("left_eye", "right_eye", "left_ear", "right_ear", "nose")
SCORER = "DLC_resnet50_cagedemoNov29shuffle1_100000"
# What `main` writes into --out: the video, then its DeepLabCut, SLEAP and box-CSV files.
OUTPUT_NAMES = (
  "cage.mp4",
  f"cage{SCORER}.h5",
  "labels.v001.000_cage.analysis.h5",
  "cage_boxes.csv",
)


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[str]:
  """Yields a temporary path next to `path` (hidden, same extension: the writers pick the
  format by it) and renames it over `path` when the block ends; removes it on an error."""
  folder, name = os.path.split(os.path.abspath(path))
  tmp = os.path.join(folder, f".{name}.tmp{os.path.splitext(name)[1]}")
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


@dataclasses.dataclass
class Scene:
  """A rendered cage video: frames, and per animal and frame where its face is."""

  frames: list  # F PIL RGB images, frame_size
  keypoints: np.ndarray  # F x A x 5 x 2 pixels (NaN: not visible / animal away)
  likelihood: np.ndarray  # F x A x 5 (0 where NaN)
  face_boxes: np.ndarray  # F x A x 4: x, y, w, h of the pasted face crop (NaN: away)
  animals: list  # A names
  blurred: list  # frame indices blurred (out of focus)
  dark: list  # frame indices dimmed
  fps: float


def _face(rat_id: int, seed: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
  """A frontal twin face (256 px), its 5 landmarks (normalised) and their visibility."""
  spec = synthetic.plan(seed=seed, max_per_split=1)[rat_id - 1]
  spec = dataclasses.replace(
    spec, head_pose=(0.0, 0.0, 0.0), offset=(0.0, 0.0), scale=1.0, occluder="none", blur=0.0
  )
  ex = synthetic.render(spec)
  img = Image.open(io.BytesIO(ex["image"])).convert("RGB")
  n = len(KEYPOINTS)
  return img, np.asarray(ex["landmarks"][:n], np.float64), np.asarray(ex["landmark_visible"][:n])


def _cage(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
  """A grey cage floor with bedding speckle and bars."""
  w, h = size
  base = rng.normal(120, 12, (h // 8 + 1, w // 8 + 1, 1)).repeat(3, axis=2)
  img = np.asarray(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((w, h)))
  img = img.astype(np.float32) + rng.normal(0, 6, (h, w, 3))
  img[:, :: max(8, w // 20)] *= 0.6  # bars
  return np.clip(img, 0, 255).astype(np.uint8)


def make_scene(
  *,
  num_frames: int = 12,
  frame_size: tuple[int, int] = (320, 240),
  face_px: int = 112,
  num_animals: int = 1,
  blurred: Sequence[int] = (),
  dark: Sequence[int] = (),
  away: dict | None = None,
  fps: float = 5.0,
  seed: int = 0,
) -> Scene:
  """Renders the scene; `away` maps an animal index to the frames it is out of view."""
  rng = np.random.default_rng(seed)
  w, h = frame_size
  if face_px * num_animals > w or face_px > h:
    raise ValueError(f"{num_animals} faces of {face_px} px do not fit a {w}x{h} frame")
  faces = [_face(a + 1, seed) for a in range(num_animals)]
  faces = [(img.resize((face_px, face_px), Image.BILINEAR), lm, vis) for img, lm, vis in faces]
  background = _cage(rng, frame_size)
  lane = w // num_animals
  away = away or {}
  n = len(KEYPOINTS)
  kp = np.full((num_frames, num_animals, n, 2), np.nan)
  lik = np.zeros((num_frames, num_animals, n))
  boxes = np.full((num_frames, num_animals, 4), np.nan)
  frames = []
  for f in range(num_frames):
    frame = Image.fromarray(background)
    s = f / max(1, num_frames - 1)
    for a, (img, lm, vis) in enumerate(faces):
      if f in away.get(a, ()):
        continue
      x = int(round(a * lane + s * (lane - face_px)))  # left to right within its lane
      y = int(round((h - face_px) * (0.2 + 0.6 * abs(np.sin(np.pi * s)))))
      frame.paste(img, (x, y))
      boxes[f, a] = (x, y, face_px, face_px)
      kp[f, a, vis] = lm[vis] * face_px + (x, y)
      lik[f, a, vis] = rng.uniform(0.9, 1.0, int(vis.sum()))
    if f in blurred:  # out of focus (or the camera shaken): the whole frame
      frame = frame.filter(ImageFilter.GaussianBlur(face_px / 25))
    if f in dark:
      frame = Image.fromarray((np.asarray(frame, np.float32) * 0.05).astype(np.uint8))
    frames.append(frame)
  names = [f"rat{a + 1}" for a in range(num_animals)]
  return Scene(frames, kp, lik, boxes, names, sorted(blurred), sorted(dark), fps)


def write_video(path: str, frames: Sequence[Image.Image], fps: float, codec="libx264") -> None:
  """Encodes the frames (yuv420p; libx264 at CRF 10: nearly lossless)."""
  import av

  w, h = frames[0].size
  with _replacing(path) as tmp, av.open(tmp, "w") as container:
    stream = container.add_stream(codec, rate=int(round(fps)))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    if codec == "libx264":
      stream.options = {"crf": "10", "preset": "veryfast"}
    for img in frames:
      for packet in stream.encode(av.VideoFrame.from_image(img)):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def deeplabcut_table(scene: Scene, multi_animal: bool | None = None):
  """The scene's keypoints as DeepLabCut's DataFrame (index = frame)."""
  import pandas as pd

  multi = len(scene.animals) > 1 if multi_animal is None else multi_animal
  columns, data = [], []
  for a, animal in enumerate(scene.animals):
    for k, part in enumerate(KEYPOINTS):
      for c, values in (
        ("x", scene.keypoints[:, a, k, 0]),
        ("y", scene.keypoints[:, a, k, 1]),
        ("likelihood", scene.likelihood[:, a, k]),
      ):
        columns.append((SCORER, animal, part, c) if multi else (SCORER, part, c))
        data.append(values)
  names = ["scorer", "individuals", "bodyparts", "coords"] if multi else None
  names = names or ["scorer", "bodyparts", "coords"]
  index = pd.MultiIndex.from_tuples(columns, names=names)
  return pd.DataFrame(np.stack(data, axis=1), columns=index)


def write_deeplabcut(path: str, scene: Scene, multi_animal: bool | None = None) -> None:
  """`.h5` (needs PyTables) or `.csv`, as DeepLabCut's analyze_videos writes them."""
  df = deeplabcut_table(scene, multi_animal)
  with _replacing(path) as tmp:
    if path.endswith(".csv"):
      df.to_csv(tmp)
    else:
      df.to_hdf(tmp, key="df_with_missing", format="table", mode="w")


def write_sleap(path: str, scene: Scene) -> None:
  """A SLEAP analysis file (`sleap-convert --format analysis`): h5py datasets, transposed."""
  import h5py

  tracks = np.transpose(scene.keypoints, (1, 3, 2, 0))  # A x 2 x N x F
  scores = np.transpose(scene.likelihood, (1, 2, 0))  # A x N x F
  occupancy = np.isfinite(scene.keypoints[..., 0]).any(-1).astype(np.uint8)  # F x A
  with _replacing(path) as tmp, h5py.File(tmp, "w") as f:
    f.create_dataset("tracks", data=tracks.astype(np.float64))
    f.create_dataset("point_scores", data=scores.astype(np.float64))
    f.create_dataset("instance_scores", data=scores.mean(1))
    f.create_dataset("track_occupancy", data=occupancy)
    f.create_dataset("node_names", data=np.array([k.encode() for k in KEYPOINTS], dtype="S"))
    f.create_dataset("track_names", data=np.array([a.encode() for a in scene.animals], dtype="S"))
    f.create_dataset("video_path", data="cage.mp4")


def write_box_csv(path: str, scene: Scene, video: str) -> None:
  """The plain box CSV (the pasted face boxes; frames where an animal is away are left out)."""
  lines = ["video,frame,x,y,w,h,animal,score"]
  for f in range(len(scene.frames)):
    for a, animal in enumerate(scene.animals):
      if np.isfinite(scene.face_boxes[f, a]).all():
        x, y, w, h = (int(v) for v in scene.face_boxes[f, a])
        lines.append(f"{video},{f},{x},{y},{w},{h},{animal},0.99")
  with _replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
    fh.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True, help="folder to write cage.mp4 and its tracking files")
  ap.add_argument("--frames", type=int, default=150)
  ap.add_argument("--animals", type=int, default=1)
  ap.add_argument("--width", type=int, default=640)
  ap.add_argument("--height", type=int, default=480)
  ap.add_argument("--face_px", type=int, default=200)
  ap.add_argument("--fps", type=float, default=15.0)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument(
    "--overwrite", action="store_true", help="replace the files of an earlier demo in --out"
  )
  args = ap.parse_args(argv)
  names = dict(zip(("video", "dlc", "sleap", "csv"), OUTPUT_NAMES))
  paths = {k: os.path.join(args.out, n) for k, n in names.items()}
  existing = [p for p in paths.values() if os.path.lexists(p)]
  if existing and not args.overwrite:
    print(
      f"error: {', '.join(existing)} already exist(s); pass --overwrite to replace the demo "
      "files, or choose another --out",
      file=sys.stderr,
    )
    return 2
  os.makedirs(args.out, exist_ok=True)
  scene = make_scene(
    num_frames=args.frames,
    frame_size=(args.width, args.height),
    face_px=args.face_px,
    num_animals=args.animals,
    blurred=range(args.frames // 3, args.frames // 3 + max(1, args.frames // 20)),
    fps=args.fps,
    seed=args.seed,
  )
  video = paths["video"]
  write_video(video, scene.frames, scene.fps)
  write_deeplabcut(paths["dlc"], scene)
  write_sleap(paths["sleap"], scene)
  write_box_csv(paths["csv"], scene, names["video"])
  print(f"wrote {video} ({args.frames} frames) and its DeepLabCut, SLEAP and box files")
  return 0


if __name__ == "__main__":
  sys.exit(main())
