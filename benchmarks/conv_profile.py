"""Where the CPU training step's time goes: each ResNet-18 convolution, XLA's own vs. im2col.

  python benchmarks/conv_profile.py [--batch 16 --chunk 2 --repeats 5]

For every distinct convolution of the ResNet-18 trunk at 224 px (the stem, the
3x3 convolutions of each stage, the stride-2 ones and the 1x1 projections), in
one process on the default device, median milliseconds of

  * XLA's convolution: forward, input gradient (dX) and kernel gradient (dW);
  * im2col: building the patch matrix in chunks of `--chunk` images, so that it
    stays in cache, times one matrix product per chunk (forward: patches @ K;
    dW: sum over chunks of patches^T @ dY), checked against XLA's results;
  * the matrix product alone, at the size of the whole batch (the ceiling an
    im2col formulation could reach),

  * `painseeker_jax.onednn_conv` (config.model.conv="onednn": oneDNN's kernels
    as XLA FFI calls) forward + dX + dW, where it loads;
  * with torch installed (the `bench` extra), PyTorch's convolution (oneDNN,
    channels_last) forward and forward + backward (dX, dW) of the same layer,

plus how often the convolution occurs in ResNet-18, so that the last lines sum
the convolution time of one training step (forward + dX + dW; the stem needs
no dX). Figures: benchmarks/README.md, "Training step: JAX vs. PyTorch".
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from painseeker_jax import onednn_conv

# (input size, in channels, out channels, kernel, stride, padding, occurrences in ResNet-18)
LAYERS = [
  (224, 3, 64, 7, 2, 3, 1),
  (56, 64, 64, 3, 1, 1, 4),
  (56, 64, 128, 3, 2, 1, 1),
  (28, 128, 128, 3, 1, 1, 3),
  (56, 64, 128, 1, 2, 0, 1),
  (28, 128, 256, 3, 2, 1, 1),
  (14, 256, 256, 3, 1, 1, 3),
  (28, 128, 256, 1, 2, 0, 1),
  (14, 256, 512, 3, 2, 1, 1),
  (7, 512, 512, 3, 1, 1, 3),
  (14, 256, 512, 1, 2, 0, 1),
]


def conv(x, k, stride, pad):
  return lax.conv_general_dilated(
    x, k, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def patches(x_BxHxWxC, size, stride, pad):
  """im2col: (B*Ho*Wo, size*size*C), columns ordered (kh, kw, c) like an HWIO kernel."""
  B, H, W, C = x_BxHxWxC.shape
  xp = jnp.pad(x_BxHxWxC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = (H + 2 * pad - size) // stride + 1, (W + 2 * pad - size) // stride + 1
  cols = [
    xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
    for i in range(size)
    for j in range(size)
  ]
  return jnp.stack(cols, axis=3).reshape(B * ho * wo, size * size * C)


def im2col_forward(x, k, stride, pad, chunk):
  size, _, _, co = k.shape
  B = x.shape[0]
  y = lax.map(
    lambda xc: patches(xc, size, stride, pad) @ k.reshape(-1, co),
    x.reshape(B // chunk, chunk, *x.shape[1:]),
  )
  return y  # (B/chunk, chunk*Ho*Wo, co)


def im2col_kernel_grad(x, dy, size, stride, pad, chunk):
  B, co = x.shape[0], dy.shape[-1]

  def add(acc, xs):
    xc, dyc = xs
    return acc + patches(xc, size, stride, pad).T @ dyc.reshape(-1, co), None

  acc, _ = lax.scan(
    add,
    jnp.zeros((size * size * x.shape[-1], co), x.dtype),
    (x.reshape(B // chunk, chunk, *x.shape[1:]), dy.reshape(B // chunk, chunk, *dy.shape[1:])),
  )
  return acc.reshape(size, size, x.shape[-1], co)


def torch_conv_ms(torch, h, ci, co, size, stride, pad, batch, repeats):
  """PyTorch forward and forward + backward (dX unless the stem, dW) of one convolution."""
  torch.manual_seed(0)
  x = torch.randn(batch, ci, h, h).to(memory_format=torch.channels_last).requires_grad_(ci > 3)
  conv = torch.nn.Conv2d(ci, co, size, stride, pad, bias=False).to(
    memory_format=torch.channels_last
  )

  def fwd_bwd():
    y = conv(x)
    y.backward(torch.ones_like(y))

  def fwd():
    with torch.no_grad():
      conv(x)

  return bench(fwd, repeats=repeats), bench(fwd_bwd, repeats=repeats)


def bench(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  jax.block_until_ready(fn(*args))
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts) * 1e3


def main():
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--chunk", type=int, default=2, help="images per im2col chunk")
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  rng = np.random.default_rng(0)
  try:
    import torch  # noqa: PLC0415  (optional: the `bench` extra)
  except ImportError:
    torch = None
  print(
    f"jax {jax.__version__} on {jax.default_backend()}, batch {args.batch}, "
    f"im2col chunk {args.chunk}; "
    "milliseconds (GFLOP/s)"
  )
  have_onednn = onednn_conv.available()
  print(
    "| conv | n | GFLOP | XLA fwd | XLA dX | XLA dW | im2col fwd | im2col dW | matmul alone "
    "| oneDNN (FFI) fwd+dX+dW | PyTorch fwd | PyTorch fwd+dX+dW |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  total = {"xla": 0.0, "best": 0.0, "matmul": 0.0, "torch": 0.0, "onednn": 0.0}
  for h, ci, co, size, stride, pad, n in LAYERS:
    x = jnp.asarray(rng.normal(size=(args.batch, h, h, ci)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(size, size, ci, co)) * 0.1, jnp.float32)
    ho = (h + 2 * pad - size) // stride + 1
    dy = jnp.asarray(rng.normal(size=(args.batch, ho, ho, co)), jnp.float32)
    gflop = 2 * args.batch * ho * ho * co * size * size * ci / 1e9
    fwd = jax.jit(lambda x, k, s=stride, q=pad: conv(x, k, s, q))
    dx = jax.jit(lambda x, k, dy, s=stride, q=pad: jax.vjp(lambda x: conv(x, k, s, q), x)[1](dy)[0])
    dw = jax.jit(lambda x, k, dy, s=stride, q=pad: jax.vjp(lambda k: conv(x, k, s, q), k)[1](dy)[0])
    i_fwd = jax.jit(lambda x, k, s=stride, q=pad: im2col_forward(x, k, s, q, args.chunk))
    i_dw = jax.jit(
      lambda x, dy, z=size, s=stride, q=pad: im2col_kernel_grad(x, dy, z, s, q, args.chunk)
    )
    np.testing.assert_allclose(
      np.asarray(i_fwd(x, k)).reshape(dy.shape), fwd(x, k), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_allclose(i_dw(x, dy), dw(x, k, dy), rtol=1e-3, atol=1e-2)
    a = jnp.asarray(rng.normal(size=(args.batch * ho * ho, size * size * ci)), jnp.float32)
    t = {
      "fwd": bench(fwd, x, k, repeats=args.repeats),
      "dx": bench(dx, x, k, dy, repeats=args.repeats),
      "dw": bench(dw, x, k, dy, repeats=args.repeats),
      "ifwd": bench(i_fwd, x, k, repeats=args.repeats),
      "idw": bench(i_dw, x, dy, repeats=args.repeats),
      "mm": bench(jax.jit(lambda a, b: a @ b), a, k.reshape(-1, co), repeats=args.repeats),
    }
    if have_onednn:
      # 0.5 |y|^2, so that the gradient needs the forward pass (with a loss linear in y, XLA would
      # drop the unused forward call).
      f = jax.jit(
        jax.grad(
          lambda x, k, s=stride, q=pad: 0.5 * jnp.sum(onednn_conv.conv2d(x, k, s, q) ** 2),
          argnums=(0, 1) if ci > 3 else 1,
        )
      )
      t["onednn"] = bench(f, x, k, repeats=args.repeats)
    else:
      t["onednn"] = float("nan")
    total["onednn"] += n * t["onednn"]
    t["tf"], t["tfb"] = (
      torch_conv_ms(torch, h, ci, co, size, stride, pad, args.batch, args.repeats)
      if torch
      else (float("nan"), float("nan"))
    )
    total["torch"] += n * t["tfb"]
    r = lambda ms, gflop=gflop: f"{ms:.1f} ({gflop / ms * 1e3:.0f})"  # noqa: E731
    dx_ms = t["dx"] if ci > 3 else 0.0  # the stem's input gradient is never needed
    total["xla"] += n * (t["fwd"] + dx_ms + t["dw"])
    total["best"] += n * (min(t["fwd"], t["ifwd"]) + dx_ms + min(t["dw"], t["idw"]))
    total["matmul"] += n * t["mm"] * (3 if ci > 3 else 2)
    print(
      f"| {h}x{h}x{ci}->{co} k{size}s{stride} | {n} | {gflop:.2f} | {r(t['fwd'])} | "
      f"{r(t['dx']) if ci > 3 else '-'} | {r(t['dw'])} | {r(t['ifwd'])} | {r(t['idw'])} | "
      f"{r(t['mm'])} | "
      f"{t['onednn']:.1f} | {r(t['tf'])} | {t['tfb']:.1f} |",
      flush=True,
    )
  print(
    f"convolutions of one training step: XLA {total['xla']:.0f} ms; "
    "taking the faster of XLA and im2col "
    f"per layer and pass {total['best']:.0f} ms ({total['xla'] / total['best']:.2f}x); "
    f"every pass at its layer's matmul speed (no patch building): {total['matmul']:.0f} ms"
  )
  if have_onednn:
    print(f"oneDNN through XLA FFI (config.model.conv=onednn): {total['onednn']:.0f} ms")
  if torch:
    print(
      f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads): {total['torch']:.0f} ms"
    )


if __name__ == "__main__":
  main()
