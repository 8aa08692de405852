r"""Speed of `painseeker predict` on this machine: images/s, decoding vs. network.

  python benchmarks/predict.py                       # batch 64, 224 px, full PainSeeker
  python benchmarks/predict.py --model models/final  # a trained model directory
  python benchmarks/predict.py --num-images 256 --batch-size 32 --threads 2
  python benchmarks/predict.py --video-frames 0    # images only

Without --model a randomly initialised full-size PainSeeker (ResNet-18 trunk)
is used: the cost of inference does not depend on the weights. The inputs are
the real face crops of tests/data/real_samples (about 207x207 JPEG), copied
--num-images times into a temporary folder.

Prints:
  * decoding only: `predict.load_image` (decode, RGB, resize) on one thread
    and on --threads threads;
  * network only: the jit-compiled prediction of one fixed-shape batch
    (compiled and warmed up first);
  * end to end: `predict.run` on the folder (CSV written, no heat maps), with
    the network function compiled beforehand so that the figure is the
    steady-state rate;
  * the share of the sequential per-image cost spent decoding vs. in the
    network (decoding runs in background threads while the network runs, so
    the end-to-end rate is bounded by the larger of the two);
  * the video case (`painseeker predict --boxes`): a cage video rendered from
    the twin (tfds_ratspain/cage_video.py; --video-frames frames of
    --video-size, H.264, one rat's face at 200 px) with its DeepLabCut .h5
    file, every frame sampled: decoding + face box + crop + quality gate alone
    (one thread: a video is decoded in order) and end to end through
    `predict.run`, in frames/s, and the share of the sequential per-frame cost
    spent outside the network.
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from painseeker_jax import export, inference, predict, tracking  # noqa: E402
from tfds_ratspain import cage_video  # noqa: E402

SAMPLES = os.path.join(ROOT, "tests", "data", "real_samples")


def _random_model(image_size: int, size: str):
  config = ml_collections.ConfigDict(
    {
      "model": {"name": "painseeker", "size": size},
      "image_size": image_size,
      "loss": {"lambda_au": 0.0},  # the paper's model: no AU heads
    }
  )
  model = export.create_model(config)
  v = jax.jit(
    lambda k: model.init(k, jax.numpy.zeros((1, image_size, image_size, 3)), train=False)
  )(jax.random.key(0))
  return export.LoadedModel(
    model=model,
    variables=[{"params": v["params"], "batch_stats": v["batch_stats"]}],
    members=["random"],
    image_size=image_size,
    mean_rgb=inference.MEAN_RGB,
    std_rgb=inference.STD_RGB,
    class_names=export.CLASS_NAMES,
    num_regions=inference.num_regions(model, image_size),
    kind="model",
    source="(random initialisation)",
    config=config,
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument(
    "--model", help="model directory or LORO work directory (default: random full PainSeeker)"
  )
  ap.add_argument(
    "--image-size", type=int, default=224, help="input size without --model (default 224)"
  )
  ap.add_argument("--model-size", default="full", choices=["full", "tiny"], help="without --model")
  ap.add_argument("--batch-size", type=int, default=64)
  ap.add_argument("--num-images", type=int, default=512)
  ap.add_argument("--threads", type=int, default=4, help="decoding threads (default 4)")
  ap.add_argument("--repeats", type=int, default=3, help="timed network batches")
  ap.add_argument("--video-frames", type=int, default=256, help="video case frames (0: none)")
  ap.add_argument("--video-size", default="640x480", help="video case frame size WxH")
  args = ap.parse_args()

  loaded = (
    export.load(args.model) if args.model else _random_model(args.image_size, args.model_size)
  )
  size, bs = loaded.image_size, args.batch_size
  print(
    f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} CPU cores"
  )
  print(f"model: {loaded.describe()}; batch {bs}")

  tmp = tempfile.mkdtemp(prefix="painseeker_bench_")
  try:
    names = sorted(f for f in os.listdir(SAMPLES) if f.endswith(".jpg"))
    paths = []
    for i in range(args.num_images):
      p = os.path.join(tmp, "faces", f"{i:05d}_{names[i % len(names)]}")
      os.makedirs(os.path.dirname(p), exist_ok=True)
      shutil.copy(os.path.join(SAMPLES, names[i % len(names)]), p)
      paths.append(p)

    # Decoding only.
    t = time.perf_counter()
    for p in paths:
      predict.load_image(p, size)
    dec1 = (time.perf_counter() - t) / len(paths)
    t = time.perf_counter()
    for _ in predict._bounded_map(
      lambda p: predict.load_image(p, size), paths, args.threads, 2 * bs
    ):
      pass
    decn = (time.perf_counter() - t) / len(paths)

    # Network only (compiled and warmed up first).
    fn = predict.make_predict_fn(loaded)
    stacked = inference.stack_variables(loaded.variables)
    images = np.stack([predict.load_image(paths[i % len(paths)], size) for i in range(bs)])
    t = time.perf_counter()
    jax.block_until_ready(fn(stacked, images))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.repeats):
      jax.block_until_ready(fn(stacked, images))
    net = (time.perf_counter() - t) / (args.repeats * bs)

    # End to end through predict.run, with the compiled function.
    opts = predict.Options(
      model="",
      output=os.path.join(tmp, "scores.csv"),
      paths=[os.path.join(tmp, "faces")],
      batch_size=bs,
      num_threads=args.threads,
      progress=False,
    )
    e2e = _run(opts, loaded, fn)
    video = _video_case(args, loaded, fn, net, tmp) if args.video_frames else []
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  n = len(paths)
  print(
    f"decoding only:   {1 / dec1:8.1f} images/s on 1 thread, {1 / decn:8.1f} images/s on "
    f"{args.threads} threads ({dec1 * 1e3:.2f} ms per image)"
  )
  print(
    f"network only:    {1 / net:8.1f} images/s ({net * 1e3:.2f} ms per image; "
    f"compile {compile_s:.1f} s)"
  )
  print(
    f"end to end:      {n / e2e:8.1f} images/s ({n} images, batch {bs}, "
    f"{args.threads} decoding threads)"
  )
  print(
    f"share of the sequential per-image cost: decoding {100 * dec1 / (dec1 + net):.1f}%, "
    f"network {100 * net / (dec1 + net):.1f}%"
  )
  for line in video:
    print(line)


def _run(opts, loaded, fn) -> float:
  """Seconds of `predict.run` with the already compiled network function."""
  make = predict.make_predict_fn
  predict.make_predict_fn = lambda _loaded: fn
  try:
    out = io.StringIO()
    t = time.perf_counter()
    rc = predict.run(opts, loaded=loaded, out=out)
    seconds = time.perf_counter() - t
  finally:
    predict.make_predict_fn = make
  assert rc == 0, out.getvalue()
  return seconds


def _video_case(args, loaded, fn, net: float, tmp: str) -> list[str]:
  """The video case's lines (see the module docstring)."""
  width, height = (int(v) for v in args.video_size.lower().split("x"))
  scene = cage_video.make_scene(
    num_frames=args.video_frames, frame_size=(width, height), face_px=200, fps=15.0
  )
  path = os.path.join(tmp, "cage.mp4")
  cage_video.write_video(path, scene.frames, scene.fps)
  boxes = os.path.join(tmp, f"cage{cage_video.SCORER}.h5")
  cage_video.write_deeplabcut(boxes, scene)
  opts = predict.Options(
    model="",
    output=os.path.join(tmp, "video.csv"),
    paths=[path],
    boxes=[boxes],
    every_frames=1,
    batch_size=args.batch_size,
    progress=False,
  )
  opts = predict.validate_options(opts)
  tracks = tracking.read_tracks(boxes)
  gate = (opts.min_sharpness, opts.min_exposure)
  t = time.perf_counter()
  decoded = sum(1 for _ in predict.iter_frames(path, every_frames=1)) - 1
  dec = (time.perf_counter() - t) / decoded
  t = time.perf_counter()
  scored = 0
  for it in predict._video_items(path, opts, loaded.image_size, tracks, gate):
    scored += it.image is not None
  prep = (time.perf_counter() - t) / decoded
  e2e = _run(opts, loaded, fn)
  return [
    f"video ({width}x{height} H.264, {decoded} frames, DeepLabCut boxes, every frame; "
    f"{scored} scored):",
    f"  decoding only {1 / dec:8.1f} frames/s ({dec * 1e3:.2f} ms); decoding + box + crop + "
    f"gate {1 / prep:8.1f} frames/s ({prep * 1e3:.2f} ms)",
    f"  end to end    {decoded / e2e:8.1f} frames/s",
    f"  share of the sequential per-frame cost outside the network: "
    f"{100 * prep / (prep + net):.1f}% (network {net * 1e3:.2f} ms per frame)",
  ]


if __name__ == "__main__":
  main()
