"""Speed benchmarks, measured side by side in one run; prints ratios to the default.

    python benchmarks/run.py [--quick]

Each case is timed several times (median); ratios compare cases measured in the same
process on the same machine, so they are meaningful on a shared, noisy machine where
absolute times are not. CPU only unless a GPU is present (then training also on CUDA).
Prediction speed is measured by ``benchmarks/inference.py speed`` (against the naive tiler
and the symmetric U-Net baseline).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _defaults

from em2fm.geometry import ImageGeometry
from em2fm.predict import set_threads
from em2fm.register import RegistrationParams, register_images
from em2fm.unet import UNetConfig, build

DEFAULT = {**_defaults.network(), "em_scale": _defaults.em_scale()}


def timeit(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time (s) of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(title: str, rows: list[tuple[str, float, str]]) -> None:
    """Print cases with their time and ratio to the first (the default)."""
    print(f"\n{title}")
    base = rows[0][1]
    for name, t, unit in rows:
        print(f"  {name:<44} {t * 1e3:9.1f} ms  ×{t / base:5.2f}  {unit}")


def train_steps(repeats: int, device: torch.device) -> None:
    rows = []
    for name, cfg, batch, size in [
        ("default (config.yaml), b8", UNetConfig(**DEFAULT), 8, 40),
        ("base ×2", UNetConfig(**{**DEFAULT, "base_channels": 2 * DEFAULT["base_channels"]}),
         8, 40),
        ("stem blocks, base 16 (the design until Dec 2026)",
         UNetConfig(**{**DEFAULT, "stem": "blocks", "base_channels": 16}), 8, 40),
        ("em_scale 8, depth 5 (4× more EM pixels)",
         UNetConfig(**{**DEFAULT, "depth": 5, "em_scale": 8}), 8, 40),
    ]:
        net = build(cfg).to(device)
        opt = torch.optim.AdamW(net.parameters())
        x = torch.randn(batch, 1, size * cfg.em_scale, size * cfg.em_scale, device=device)
        y = torch.randn(batch, 2, size, size, device=device)

        def step(net=net, opt=opt, x=x, y=y) -> None:
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()

        rows.append((name, timeit(step, repeats), "per training step"))
    report(f"Training step ({device})", rows)


def registration(repeats: int) -> None:
    rng = np.random.default_rng(0)
    em = rng.normal(size=(2048, 2048)).astype(np.float32)
    fm = rng.normal(size=(300, 300)).astype(np.float32)
    em_geom = ImageGeometry((2048, 2048), (10e-9, 10e-9), (0.0, 0.0))
    fm_geom = ImageGeometry((300, 300), (106e-9, 106e-9), (2e-7, 0.0), rotation_rad=0.1)
    rows = []
    for name, params in [("default: 100 nm working pixels", RegistrationParams()),
                         ("50 nm working pixels", RegistrationParams(pixel_size_nm=50)),
                         ("one start, no multi-start", RegistrationParams(starts=1)),
                         ("rigid", RegistrationParams(transform="rigid"))]:
        rows.append((name, timeit(lambda p=params: register_images(em, em_geom, fm, fm_geom, p),
                                  repeats), "per section"))
    report("Registration (2048² EM, 300² FM)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat per case")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    print(f"torch {torch.__version__}, {set_threads(args.threads)} CPU threads")
    train_steps(repeats, torch.device("cpu"))
    if torch.cuda.is_available():
        train_steps(repeats, torch.device("cuda"))
    registration(repeats)


if __name__ == "__main__":
    main()
