"""Windowed inference benchmarks, measured side by side in one run.

    python benchmarks/inference.py seams [--model results/model/model.pt]
    python benchmarks/inference.py memory [--sizes 4096 16384 32768]
    python benchmarks/inference.py speed [--model … --tiles results/tiles/S.npz]

- **seams**: ratio of the mean gradient magnitude across window borders to that inside
  windows (1.0 = no trace of the window grid; target ≤ 1.05), for this predictor
  (context = receptive field, aligned windows; butted and blended) and for a naive butted
  tiler (4 target px of context, the former default), on the prediction and on the TTA
  uncertainty.
- **memory**: peak RSS and time of the bounded-memory prediction of synthetic EM sections
  stored as tiled TIFFs, each size in a fresh process.
- **speed**: EM Mpx/s of this predictor, the naive tiler and a symmetric U-Net baseline,
  and the fraction of this machine's measured convolution throughput reached.

Without ``--model`` a randomly initialised network of the default architecture is used
(seams and speed do not depend on training); PCC needs a trained model and its tiles.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from em2fm.inference import InferenceSettings, WindowedPredictor, model_margin, set_threads
from em2fm.predict import load_model
from em2fm.unet import UNetConfig, build


def texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """EM-like z-scored texture: noise smoothed at several scales (work px)."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for sigma, amp in [(1, 0.5), (4, 1.0), (16, 1.5), (48, 1.0)]:
        img += amp * ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    img -= img.mean()
    return img / img.std()


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
    return build(UNetConfig()).eval(), None


def seams(args: argparse.Namespace) -> None:
    model, trained_margin = _load(args.model)
    s = model.cfg.em_scale
    n = args.size
    em = texture((n * s, n * s))
    m = model_margin(model, trained_margin)
    window = args.window
    cases = [
        ("naive: 4 px context, butted", 4, 0),
        (f"this: {m} px context (receptive field), butted", m, 0),
        (f"this: {m} px context, {window // 4} px raised-cosine overlap", m, window // 4),
    ]
    print(f"\nSeams: {n}² target px ({n * s}² EM px), window {window} target px, "
          f"{'model ' + args.model if args.model else 'random-init default network'}")
    print(f"  {'case':<50} {'prediction':>11} {'uncertainty':>12}")
    for name, margin, overlap in cases:
        pred = WindowedPredictor(model, margin, InferenceSettings(window=window, overlap=overlap,
                                                                  tta=True))
        mean, std = pred.predict(em)
        starts = list(range(0, n, pred.stride))
        print(f"  {name:<50} {border_ratio(mean, starts, starts):11.3f} "
              f"{border_ratio(std, starts, starts):12.3f}")
    print("  ratio = mean |gradient| across window borders / inside windows (target ≤ 1.05)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["seams", "memory", "speed", "all"])
    parser.add_argument("--model", help="checkpoint (default: random-init default network)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="seams: section, target px")
    parser.add_argument("--window", type=int, default=64, help="window, target px")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {set_threads(args.threads)} CPU threads")
    t = time.perf_counter()
    if args.what in ("seams", "all"):
        seams(args)
    print(f"\n({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
