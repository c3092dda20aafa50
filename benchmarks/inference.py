"""Windowed inference benchmarks, measured side by side in one run.

    python benchmarks/inference.py seams [--model results/model/model.pt]
    python benchmarks/inference.py memory [--sizes 4096 16384 32768]
    python benchmarks/inference.py speed [--model … --tiles results/tiles/S.npz]
    python benchmarks/inference.py tta --model results/model/model.pt --tiles results/tiles/S.npz

- **seams**: ratio of the mean gradient magnitude across window borders to that inside
  windows (1.0 = no trace of the window grid; target ≤ 1.05), for this predictor
  (context = receptive field, aligned windows; butted and blended) and for a naive butted
  tiler (4 target px of context, the former default), on the prediction and on the TTA
  uncertainty.
- **memory**: peak RSS and time of the bounded-memory prediction (lazy EM, window-by-window
  pyramidal OME-TIFF writing) of synthetic EM sections stored as raw ``.npy`` files (read
  region by region with positioned reads, as ingest's npz), each size in a fresh process.
- **speed**: EM Mpx/s of this predictor, the naive tiler and a symmetric U-Net baseline,
  and the fraction of this machine's measured convolution throughput reached.

Without ``--model`` a randomly initialised network of the default architecture is used,
its batch-norm statistics measured on the synthetic EM so that every level contributes
(seams and speed do not need training); PCC needs a trained model and its tiles.

The closing note of issue 8 was printed by:

    nice python benchmarks/inference.py all
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _defaults
from _synthetic import peak_rss_mib, texture

from em2fm.inference import (
    InferenceSettings,
    WindowedPredictor,
    fuse_batchnorm,
    keep_freed_memory,
    model_margin,
    set_threads,
)
from em2fm.predict import load_model
from em2fm.unet import SymmetricUNet, UNetConfig, build, describe, n_parameters


def border_ratio(pred: np.ndarray, origins_r: list[int], origins_c: list[int]) -> float:
    """Mean |gradient| across window borders / mean |gradient| elsewhere (both axes)."""
    dx = np.abs(np.diff(pred, axis=-1))  # dx[..., j] between columns j and j+1
    dy = np.abs(np.diff(pred, axis=-2))
    bc = np.zeros(dx.shape[-1], bool)
    bc[[c - 1 for c in origins_c if c > 0]] = True
    br = np.zeros(dy.shape[-2], bool)
    br[[r - 1 for r in origins_r if r > 0]] = True
    border = np.concatenate([dx[..., bc].ravel(), dy[..., br, :].ravel()])
    inside = np.concatenate([dx[..., ~bc].ravel(), dy[..., ~br, :].ravel()])
    return float(border.mean() / inside.mean())


def _load(model_path: str | None) -> tuple[torch.nn.Module, int | None]:
    if model_path:
        model, ckpt = load_model(model_path, torch.device("cpu"))
        return model, int(ckpt["margin"])
    torch.manual_seed(0)
    net = build(UNetConfig(em_scale=_defaults.em_scale(), **_defaults.network()))
    return calibrated(net, texture((1024, 1024), seed=5)), None


def calibrated(net: torch.nn.Module, em: np.ndarray, size: int = 352) -> torch.nn.Module:
    """Random-init network with batch-norm statistics measured on ``em``, in eval mode.

    With the default running statistics (mean 0, var 1) the deep levels of an untrained
    network contribute almost nothing, so far context would not matter; normalised, every
    level contributes as in a trained network.
    """
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average
    net.train()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for _ in range(4):
            r, c = rng.integers(0, em.shape[0] - size, 2)
            net(torch.from_numpy(np.ascontiguousarray(em[None, None, r: r + size,
                                                         c: c + size])))
    return net.eval()


def seams(args: argparse.Namespace) -> None:
    model, trained_margin = _load(args.model)
    s = model.cfg.em_scale
    m = model_margin(model, trained_margin)
    window = args.window
    cases = [
        ("reference: whole section in one window (no grid)", m, -1),
        ("naive: 4 px context, butted", 4, 0),
        (f"this: {m} px context (receptive field), butted", m, 0),
        (f"this: {m} px context, {window // 4} px raised-cosine overlap", m, window // 4),
    ]
    n, nt = args.size, args.tta_size
    em, em_t = texture((n * s, n * s)), texture((nt * s, nt * s), seed=1)
    print(f"\nSeams: window {window} target px; prediction on {n}² target px, TTA uncertainty "
          f"on {nt}²; {'model ' + args.model if args.model else 'random-init default network'}")
    print(f"  {'case':<50} {'prediction':>11} {'uncertainty':>12}")
    for name, margin, overlap in cases:
        ratios = []
        for size, image, tta in ((n, em, False), (nt, em_t, True)):
            whole = overlap < 0
            pred = WindowedPredictor(model, margin, InferenceSettings(
                window=size if whole else window, overlap=max(overlap, 0), tta=tta))
            mean, std = pred.predict(image)
            # the grid's lines (for the reference: those the butted grid would have)
            starts = list(range(0, size, window - max(overlap, 0)))
            ratios.append(border_ratio(std if tta else mean, starts, starts))
        print(f"  {name:<50} {ratios[0]:11.3f} {ratios[1]:12.3f}", flush=True)
    print("  ratio = mean |gradient| across window borders / inside windows (target ≤ 1.05); "
          "the reference shows the texture's own value on the same lines")


# -- memory ---------------------------------------------------------------------------------
EM_PX_M, TARGET_PX_M = 4.86e-9, 106.4e-9  # high-mag SEM tile and FM pixel (odemis-export.md)


def write_em(path: Path, n: int, seed: int = 0) -> None:
    """A synthetic n² uint16 EM as a .npy, written band by band (never whole in memory)."""
    patch = texture((2048, 2048), seed)
    patch = np.clip(patch * 3000 + 20000, 0, 65535).astype(np.uint16)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:  # plain writes: no mapped pages in this process's RSS
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<u2", "fortran_order": False, "shape": (n, n)})
        for r0 in range(0, n, 1024):
            rows = min(1024, n - r0)
            band = np.roll(patch, tuple(rng.integers(0, 2048, 2)), axis=(0, 1))
            reps = -(-n // 2048)
            fh.write(np.ascontiguousarray(np.tile(band[:rows], (1, reps))[:, :n]).tobytes())


def memory_one(args: argparse.Namespace) -> None:
    """One section in this process: predict + write; print peak RSS and time as JSON."""
    import json

    from em2fm.geometry import ImageGeometry
    from em2fm.lazy import PreparedEM, open_array
    from em2fm.odemis import Channel
    from em2fm.predict import predict_to_files
    from em2fm.tiles import make_grid

    torch.manual_seed(0)
    net = {**_defaults.network(), "base_channels": args.base_channels}
    model = build(UNetConfig(em_scale=_defaults.em_scale(), **net)).eval()
    rss0 = peak_rss_mib()
    t = time.perf_counter()
    reader = open_array(args.em)
    geom = ImageGeometry(reader.shape, (EM_PX_M, EM_PX_M), (0.0, 0.0))
    grid = make_grid(geom, TARGET_PX_M, 4)
    source = PreparedEM(reader, geom, grid)
    out = Path(args.em).parent
    ckpt = {"target_mean": [0.0, 0.0], "target_std": [1.0, 1.0], "margin": None}
    predict_to_files(model, source, grid, ckpt, InferenceSettings(window=args.window),
                     torch.device("cpu"), [Channel("Hoechst", 405, 450),
                                           Channel("Insulin", 590, 617)],
                     {}, out / "p.ome.tif", out / "u.ome.tif")
    seconds = time.perf_counter() - t
    size = (out / "p.ome.tif").stat().st_size
    print(json.dumps({"rss_mib": peak_rss_mib(),
                      "rss_after_import_mib": rss0, "seconds": seconds,
                      "target": list(grid.shape_yx), "work": list(grid.work_shape_yx),
                      "bytes_read": reader.bytes_read, "output_mib": size / 2**20}))


def memory(args: argparse.Namespace) -> None:
    import json
    import shutil
    import subprocess

    root = Path(args.scratch)
    print(f"\nBounded memory: synthetic EM ({EM_PX_M * 1e9:.2f} nm px) → "
          f"{TARGET_PX_M * 1e9:.1f} nm target grid, em_scale 4, window {args.memory_window}, "
          "random-init network of the default architecture with base_channels "
          f"{args.base_channels}; each size in a fresh process")
    print(f"  {'EM px':>8} {'EM file':>9} {'target px':>11} {'peak RSS':>10} "
          f"{'after import':>13} {'time':>8} {'EM Mpx/s':>9} {'output':>9}")
    for n in args.sizes:
        d = root / f"em{n}"
        d.mkdir(parents=True, exist_ok=True)
        try:
            em = d / "em.npy"
            write_em(em, n)
            res = subprocess.run([sys.executable, __file__, "memory-one", "--em", str(em),
                                  "--base-channels", str(args.base_channels),
                                  "--window", str(args.memory_window),
                                  "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"  {n:>7}² {em.stat().st_size / 2**30:7.2f} G {r['target'][0]:>10}² "
                  f"{r['rss_mib']:7.0f} MiB {r['rss_after_import_mib']:10.0f} MiB "
                  f"{r['seconds']:7.0f}s {n * n / 1e6 / r['seconds']:9.2f} "
                  f"{r['output_mib']:6.0f} MiB", flush=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)


# -- speed ----------------------------------------------------------------------------------
def conv_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Multiply-add FLOPs (×2) of the convolutions of one forward pass on ``x``."""
    total = [0.0]

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1]
        # a convolution does k multiply-adds per output px and channel pair; a transposed
        # one per input px (its outputs are stride² as many)
        x = inp[0] if isinstance(mod, torch.nn.ConvTranspose2d) else out
        px = x.numel() / x.shape[1]
        total[0] += 2.0 * mod.in_channels * mod.out_channels * k * px / mod.groups

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return total[0]


def machine_conv_flops(repeats: int = 3) -> float:
    """This machine's float32 3×3 convolution throughput (FLOP/s): the best of a few shapes,
    in both memory layouts (NCHW, NHWC)."""
    best = 0.0
    for (ch, size), layout in itertools.product([(16, 768), (32, 512), (64, 256), (128, 128)],
                                                [torch.contiguous_format, torch.channels_last]):
        conv = torch.nn.Conv2d(ch, ch, 3, padding=1, bias=False).to(memory_format=layout)
        x = torch.randn(1, ch, size, size).contiguous(memory_format=layout)
        with torch.inference_mode():
            conv(x)
            t = _timed(lambda c=conv, x=x: c(x), repeats)
        best = max(best, 2.0 * ch * ch * 9 * size * size / t)
    return best


def _timed(fn, repeats: int = 1) -> float:
    """The shortest of ``repeats`` wall-clock times of ``fn()`` (s)."""
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def baseline_model() -> torch.nn.Module:
    """The symmetric U-Net baseline (depth 4, 32 base channels, EM binned to the output grid),
    batch-norm statistics calibrated like :func:`_load`'s network."""
    torch.manual_seed(0)
    return calibrated(SymmetricUNet(out_channels=2, **_defaults.symmetric_baseline()),
                      texture((1024, 1024), seed=5), size=512)


def baseline_context(base: torch.nn.Module, window: int, contexts: list[int]) -> list[float]:
    """Seam ratio of the windowed baseline for each EM context (target px) in ``contexts``."""
    s = base.cfg.em_scale
    n = 4 * window
    em = texture((n * s, n * s), seed=7)
    starts = list(range(0, n, window))
    return [border_ratio(WindowedPredictor(base, c, InferenceSettings(window=window))
                         .predict(em)[0], starts, starts) for c in contexts]


def run_case(name: str, net: torch.nn.Module, margin: int, settings: InferenceSettings,
             em: np.ndarray, repeats: int, flops) -> tuple[str, float, float]:
    """``(name, EM Mpx/s, conv FLOP/s)`` of one windowed prediction of ``em``, best of
    ``repeats`` after a warm-up."""
    pred = WindowedPredictor(net, margin, settings)
    s = net.cfg.em_scale
    with torch.inference_mode():
        pred.predict(em[: 128 * s, : 128 * s])  # warm-up
        t = _timed(lambda: pred.predict(em), repeats)
    return name, em.size / 1e6 / t, flops(net, pred) / t


def speed(args: argparse.Namespace) -> None:
    model, trained_margin = _load(args.model)
    s = model.cfg.em_scale
    n = args.speed_size
    em = texture((n * s, n * s), seed=3)
    em_mpx = em.size / 1e6
    m = model_margin(model, trained_margin)
    peak = machine_conv_flops()
    print(f"\nSpeed: {n}² target px = {n * s}² EM (work) px, {torch.get_num_threads()} CPU "
          f"threads; measured conv throughput {peak / 1e9:.1f} GFLOP/s (float32 3×3, best of 4 "
          f"shapes × 2 layouts); this model: {describe(model.cfg.as_dict())}, "
          f"{n_parameters(model) / 1e6:.2f} M parameters")
    base = baseline_model()
    # the baseline's context: the least of these whose butted windows show no seams
    contexts = [8, 16, 32, 64]
    ratios = baseline_context(base, args.baseline_windows[0], contexts)
    print("  baseline seams, window " + str(args.baseline_windows[0]) + " target px: "
          + ", ".join(f"context {c}: {r:.3f}" for c, r in zip(contexts, ratios, strict=True)))
    b_ctx = next((c for c, r in zip(contexts, ratios, strict=True) if r <= 1.05), contexts[-1])
    print(f"  {'case':<62} {'EM Mpx/s':>9} {'× naive':>8} {'× base':>7} {'× base w':>8} "
          f"{'conv':>6}")

    def window_flops(net: torch.nn.Module, pred: WindowedPredictor) -> float:
        size = (pred.window + 2 * pred.margin) * s
        per = conv_flops(net, torch.zeros(1, 1, size, size)) * len(pred.transforms)
        count = len(range(0, n, pred.stride)) ** 2
        return per * count

    rows: list[tuple[str, float, float]] = []

    last = args.windows[-1]
    # first, before the allocator is tuned for the rest of the process: glibc's default
    rows.append(run_case(f"this, glibc default allocator: window {last}", model, m,
                         InferenceSettings(window=last), em, args.repeats, window_flops))
    print(f"  (freed blocks kept for reuse from here on: {keep_freed_memory()})")
    cases = [("naive tiler: 4 px context, window 64, butted, batch 4", model, 4,
              InferenceSettings(window=64, batch=4))]
    cases += [(f"this: {m} px context, window {window}", model, m,
               InferenceSettings(window=window)) for window in args.windows]
    cases.append((f"this, batch norm not folded: window {last}", model, m,
                  InferenceSettings(window=last, fuse=False)))
    cases.append((f"this + TTA (8 flips/rotations): window {last}", model, m,
                  InferenceSettings(window=last, tta=True)))
    cases += [(f"baseline windowed: {b_ctx} px context (seam-free), window {bw}", base, b_ctx,
               InferenceSettings(window=bw)) for bw in args.baseline_windows]
    rows += [run_case(name, net, margin, settings, em, args.repeats, window_flops)
             for name, net, margin, settings in cases]
    # the baseline windowed at its fastest window
    windowed = max(r[1] for r in rows if r[0].startswith("baseline windowed"))
    # the same folding and channels-last layout as the windowed predictor, to be fair
    folded = fuse_batchnorm(base).to(memory_format=torch.channels_last)
    x = torch.from_numpy(em[None, None].copy()).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        folded(x[..., :256, :256])
        t = _timed(lambda: folded(x), args.repeats)
    rows.append(("baseline: whole section in one pass (no windows), folded, NHWC", em_mpx / t,
                 conv_flops(folded, x) / t))
    rows = rows[1:] + rows[:1]  # the untuned row last, beside the rest
    naive, baseline = rows[0][1], rows[-2][1]
    for name, mpx, flops in rows:
        print(f"  {name:<62} {mpx:9.3f} {mpx / naive:8.2f} {mpx / baseline:7.2f} "
              f"{mpx / windowed:8.2f} {flops / peak:6.0%}")
    print("  × base: / the baseline on the whole section at once (fits in memory only for "
          "small sections); × base w: / the baseline windowed as this predictor, with the "
          "context it needs for no seams, at its fastest window; conv = fraction of the "
          "measured conv throughput reached (convolution FLOPs, context included, / time)")
    if args.tiles and args.model:
        tta_benefit(model, m, args)


def tta_benefit(model: torch.nn.Module, margin: int, em_normalisation: str,
                args: argparse.Namespace) -> None:
    """PCC with and without TTA on a section's tiles (registered FM, inside the mask), the
    EM normalised as the model was trained (``em_normalisation`` of its checkpoint)."""
    from em2fm import io
    from em2fm.evaluate import pcc
    from em2fm.tiles import normalise_em

    arrays = io.load_npz(args.tiles)
    mask = arrays["mask"].astype(bool)
    em = normalise_em(arrays["em"], em_normalisation)
    print(f"\nTTA on {args.tiles} ({int(mask.sum())} target px of registered FM), "
          f"model {args.model}: PCC per channel against the measured FM, and time")
    for tta in (False, True):
        pred = WindowedPredictor(model, margin, InferenceSettings(window=args.windows[-1],
                                                                  tta=tta))
        t = time.perf_counter()
        mean, _ = pred.predict(em)
        dt = time.perf_counter() - t
        vals = [pcc(mean[c][mask], arrays["fm"][c][mask]) for c in range(mean.shape[0])]
        print(f"  TTA {'on ' if tta else 'off'}: PCC " + ", ".join(f"{v:.4f}" for v in vals)
              + f"  ({dt:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["seams", "memory", "speed", "tta", "all",
                                         "memory-one"])
    parser.add_argument("--model", help="checkpoint (default: random-init default network)")
    parser.add_argument("--tiles", help="speed: a tiles npz for the TTA PCC (with --model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=192, help="seams: section, target px")
    parser.add_argument("--tta-size", type=int, default=64, help="seams: TTA section, px")
    parser.add_argument("--window", type=int, default=32, help="seams: window, target px")
    parser.add_argument("--repeats", type=int, default=3,
                        help="speed: best of this many timings per case")
    parser.add_argument("--windows", type=int, nargs="+",
                        default=sorted({256, _defaults.predict_window(), 1024}),
                        help="speed: windows of this predictor")
    parser.add_argument("--speed-size", type=int, default=1024, help="speed: target px")
    parser.add_argument("--baseline-windows", type=int, nargs="+", default=[128, 256, 512],
                        help="speed: the windowed baseline's windows, target px (its "
                             "fastest is the reference)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768],
                        help="memory: EM edges (px)")
    parser.add_argument("--base-channels", type=int,
                        default=_defaults.network()["base_channels"],
                        help="memory: network width (default: config.yaml's)")
    parser.add_argument("--memory-window", type=int, default=_defaults.predict_window(),
                        help="memory: window, target px (default: config.yaml's predict.window)")
    parser.add_argument("--scratch", default=".tmp/bench", help="memory: scratch folder")
    parser.add_argument("--em", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # speed times glibc's default allocator first, then keeps freed memory (all stages do)
    threads = set_threads(args.threads, keep_memory=args.what not in ("speed", "all"))
    if args.what == "memory-one":
        memory_one(args)
        return
    print(f"torch {torch.__version__}, {threads} CPU threads")
    t = time.perf_counter()
    if args.what in ("seams", "all"):
        seams(args)
    if args.what in ("speed", "all"):
        speed(args)
    if args.what in ("memory", "all"):
        memory(args)
    if args.what == "tta":
        model, ckpt = load_model(args.model, torch.device("cpu"))
        tta_benefit(model, model_margin(model, int(ckpt["margin"])),
                    ckpt.get("em_normalisation", "zscore"), args)
    print(f"\n({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
