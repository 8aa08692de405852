"""Training-step and inference throughput: the Flax PainSeeker vs. the same network in PyTorch.

  pip install -e ".[bench]"
  python benchmarks/train_throughput.py                         # batch 16, 224 px
  python benchmarks/train_throughput.py --convs=auto            # without XLA's own convolutions
  python benchmarks/train_throughput.py --no_torch --batch 64   # JAX only

Times, in one process and on the same device, side by side (the sides
alternate, repetition by repetition, so drifting machine load hits all alike),
the Flax model with each convolution path of `--convs` (`config.model.conv`:
`auto` = what a run uses here, `xla` = XLA's own convolutions, `onednn`) and
PyTorch:

  * the real training step: PainSeeker (ResNet-18 trunk, attention pooling),
    cross-entropy + 0.1 * PRSC (K_h 5, delta 0.2), Adam with L2 weight decay
    0.01, BatchNorm in training mode; uint8 images normalised inside the step;
    JAX: `train.train_step` under jit with the state donated (what the trainer
    runs); PyTorch: `torch_reference` (checked to be the same network by
    tests/test_pretrained.py), channels_last, `torch.optim.Adam(weight_decay=0.01)`;
  * inference at `--eval_batch` (softmax and attention, as in evaluation).

Prints median/min/max images/s of each and, as its last line,
`ratio_jax_over_torch=<float>` for the training step (medians) of the first
path in `--convs` (default `auto`). Figures:
benchmarks/README.md, "Training step: JAX vs. PyTorch"; where the time goes:
benchmarks/conv_profile.py.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import loro  # noqa: E402
from painseeker_jax import inference, train  # noqa: E402


def _config(args, conv):
  c = loro.get_config("real")
  c.model.pretrained = None
  c.model.name = args.model
  c.model.conv = conv
  c.batch_size, c.image_size, c.resize_size = args.batch, args.image_size, args.image_size
  c.dtype = args.dtype
  return c


def _jax_side(config, args, images, labels, eval_images):
  trainer = train.make_trainer(config)
  model, step = trainer.model, trainer.step
  state = trainer.init(jax.random.key(0))
  batch = jax.device_put({"image": images, "label": labels})
  key = jax.random.key(1)
  predict = jax.jit(lambda v, x: inference.p_pain(model, v, x))
  eval_x = jax.device_put(eval_images)
  t0 = time.perf_counter()
  state, out = step(state, batch, key)
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0

  def train_block(n):
    nonlocal state
    for i in range(n):
      state, out = step(state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready((state.params, out))

  def infer_block(n):
    v = {"params": state.params, "batch_stats": state.batch_stats}
    for _ in range(n):
      out = predict(v, eval_x)
    jax.block_until_ready(out)

  infer_block(1)  # compile
  return train_block, infer_block, compile_s, float(out["loss"])


def _torch_side(config, args, images, labels, eval_images):
  import torch  # noqa: PLC0415  (benchmark-only dependency: the `bench` extra)

  from benchmarks import torch_reference  # noqa: PLC0415

  dev = torch.device(args.torch_device)
  torch.manual_seed(0)
  net = torch_reference.resnet18(torch, num_classes=2, painseeker=args.model == "painseeker")
  net = net.to(dev, memory_format=torch.channels_last)
  opt = torch.optim.Adam(
    net.parameters(), lr=config.optimizer.learning_rate, weight_decay=config.optimizer.weight_decay
  )
  mean = torch.tensor(inference.MEAN_RGB, device=dev).view(1, 3, 1, 1)
  std = torch.tensor(inference.STD_RGB, device=dev).view(1, 3, 1, 1)
  # uint8 NHWC -> NCHW view in channels_last memory: no copy, as a loader would hand it over.
  x_u8 = torch.from_numpy(images).to(dev).permute(0, 3, 1, 2)
  y = torch.from_numpy(labels.astype(np.int64)).to(dev)
  ex_u8 = torch.from_numpy(eval_images).to(dev).permute(0, 3, 1, 2)
  sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
  loss_cfg = config.loss

  def step():
    x = (x_u8.float() / 255.0 - mean) / std
    out = net(x)
    logits, beta = out if isinstance(out, tuple) else (out, None)
    loss = torch_reference.total_loss(
      torch, logits, y, beta, loss_cfg.lambda_prsc, loss_cfg.k_h, loss_cfg.delta
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def train_block(n):
    net.train()
    for _ in range(n):
      loss = step()
    loss.item()
    sync()

  def infer_block(n):
    net.eval()
    with torch.inference_mode():
      for _ in range(n):
        out = net((ex_u8.float() / 255.0 - mean) / std)
        logits = out[0] if isinstance(out, tuple) else out
        p = torch.softmax(logits, -1)[:, 1]
      p.cpu()
    sync()

  t0 = time.perf_counter()
  first = step().item()
  sync()
  return train_block, infer_block, time.perf_counter() - t0, first


def _stats(times, images):
  rates = [images / t for t in times]
  return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--eval_batch", type=int, default=64)
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--model", default="painseeker", choices=("painseeker", "resnet18"))
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument(
    "--convs", default="auto,xla", help="config.model.conv values to time, comma-separated"
  )
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument(
    "--steps", type=int, default=3, help="training steps (inference batches) per repetition"
  )
  p.add_argument("--no_torch", action="store_true")
  p.add_argument("--no_inference", action="store_true")
  p.add_argument(
    "--torch_device", default="auto", help="cpu | cuda | auto (cuda when JAX runs on a GPU)"
  )
  args = p.parse_args()
  if args.torch_device == "auto":
    args.torch_device = "cuda" if jax.default_backend() == "gpu" else "cpu"

  if not args.no_torch:
    import torch  # noqa: F401,PLC0415  (first: its OpenMP runtime starts with the default settings)
  convs = args.convs.split(",")
  configs = {c: _config(args, c) for c in convs}
  config = configs[convs[0]]
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch, args.image_size, args.image_size, 3), dtype=np.uint8)
  labels = np.arange(args.batch, dtype=np.int32) % 2
  eval_images = rng.integers(
    0, 256, (args.eval_batch, args.image_size, args.image_size, 3), dtype=np.uint8
  )

  sides, resolved = {}, {}
  for c in convs:
    model = inference.make_model(configs[c])
    resolved[c] = model.conv
    sides[f"jax_{c}"] = _jax_side(configs[c], args, images, labels, eval_images)
  if not args.no_torch:
    import torch  # noqa: PLC0415

    sides["torch"] = _torch_side(config, args, images, labels, eval_images)
    threads = torch.get_num_threads()
  else:
    threads = None
  print(
    f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
    f"dtype={args.dtype}, convs "
    + ", ".join(f"{c}={r}" for c, r in resolved.items())
    + "; "
    + (
      f"torch {sides and __import__('torch').__version__} on {args.torch_device} "
      f"({threads} threads); "
      if not args.no_torch
      else ""
    )
    + f"{args.model}, train batch {args.batch}, eval batch {args.eval_batch}, "
    f"{args.image_size} px, {os.cpu_count()} CPUs"
  )
  for name, (_, _, compile_s, loss) in sides.items():
    print(f"{name}: first step {compile_s:.1f} s (compile included), loss {loss:.4f}")

  for _name, (train_block, infer_block, _, _) in sides.items():  # warm-up
    train_block(1)
    if not args.no_inference:
      infer_block(1)
  times = {f"{n}_{kind}": [] for n in sides for kind in ("train", "infer")}
  for _ in range(args.repeats):
    for name, (train_block, infer_block, _, _) in sides.items():
      time.sleep(0.3)  # let the other framework's worker threads go idle
      t0 = time.perf_counter()
      train_block(args.steps)
      times[f"{name}_train"].append(time.perf_counter() - t0)
      if not args.no_inference:
        time.sleep(0.3)
        t0 = time.perf_counter()
        infer_block(args.steps)
        times[f"{name}_infer"].append(time.perf_counter() - t0)

  report = {
    "backend": jax.default_backend(),
    "device": jax.devices()[0].device_kind,
    "dtype": args.dtype,
    "convs": resolved,
    "batch": args.batch,
    "eval_batch": args.eval_batch,
    "image_size": args.image_size,
    "repeats": args.repeats,
    "steps": args.steps,
  }
  for key, ts in times.items():
    if not ts:
      continue
    n = (args.batch if key.endswith("train") else args.eval_batch) * args.steps
    s = _stats(ts, n)
    report[key] = s
    print(
      f"{key:18s} images/s: median {s['median']:7.1f}  min {s['min']:7.1f}  max {s['max']:7.1f}"
    )
  print(json.dumps(report))
  if "torch" in sides:
    if not args.no_inference:
      for c in convs[1:]:
        print(
          f"ratio_infer_jax_{c}_over_torch="
          f"{report[f'jax_{c}_infer']['median'] / report['torch_infer']['median']:.3f}"
        )
      print(
        "ratio_infer_jax_over_torch="
        f"{report[f'jax_{convs[0]}_infer']['median'] / report['torch_infer']['median']:.3f}"
      )
    for c in convs[1:]:
      print(
        f"ratio_jax_{c}_over_torch="
        f"{report[f'jax_{c}_train']['median'] / report['torch_train']['median']:.3f}"
      )
    print(
      "ratio_jax_over_torch="
      f"{report[f'jax_{convs[0]}_train']['median'] / report['torch_train']['median']:.3f}"
    )


if __name__ == "__main__":
  main()
