"""Image-agreement metrics shared by evaluation, training and the report.

Every function takes the prediction first and the reference (measured FM) second where the
order matters, ignores non-finite pixels, and returns NaN (never a confident number) when the
metric is undefined: too few pixels, a constant image, an empty mask.

- :func:`pcc`: Pearson correlation (scale- and offset-free);
- :func:`r2`: coefficient of determination 1 − SSE/SST;
- :func:`nrmse`: root-mean-square error divided by the reference's robust range;
- :func:`ssim`: structural similarity (Wang et al. 2004) inside a mask;
- :func:`local_pcc_map`: PCC in a sliding window (where the model fails);
- :func:`bootstrap_ci`: mean and percentile-bootstrap confidence interval over sections.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"arrays differ in size: {a.size} vs {b.size} pixels")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def pcc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays (flattened); NaN if either is constant."""
    a, b = _pair(a, b)
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def r2(pred: np.ndarray, truth: np.ndarray) -> float:
    """Coefficient of determination 1 − SSE/SST of ``pred`` for ``truth``."""
    pred, truth = _pair(pred, truth)
    if truth.size < 2:
        return float("nan")
    sst = ((truth - truth.mean()) ** 2).sum()
    return float(1 - ((truth - pred) ** 2).sum() / sst) if sst > 0 else float("nan")


def robust_range(a: np.ndarray, percentiles: tuple[float, float] = (0.1, 99.9)) -> float:
    """Spread of ``a`` between two percentiles (same unit as ``a``); robust to hot pixels."""
    a = np.asarray(a, np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size < 2:
        return float("nan")
    lo, hi = np.percentile(a, percentiles)
    return float(hi - lo)


def nrmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """RMS error divided by the truth's 0.1–99.9 percentile range (dimensionless).

    0 is perfect; it depends on the absolute intensity scale (unlike PCC), so a section
    brighter or dimmer than the training sections scores worse even with the right pattern.
    """
    pred, truth = _pair(pred, truth)
    rng = robust_range(truth)
    if not np.isfinite(rng) or rng <= 0:
        return float("nan")
    return float(np.sqrt(np.mean((pred - truth) ** 2)) / rng)


def ssim(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
         sigma_px: float = 1.5, data_range: float | None = None) -> float:
    """Mean structural similarity of two 2-D images inside ``mask``.

    Local means, variances and covariance are Gaussian-weighted (σ = ``sigma_px`` px),
    computed from the pixels inside the mask only (normalised convolution), so the border
    of the FM/EM overlap does not count as structure. ``data_range`` (intensity unit)
    defaults to the truth's 0.1–99.9 percentile range inside the mask. Constants
    K1 = 0.01, K2 = 0.03 as in Wang et al. (2004). NaN when the mask is empty.
    """
    x = np.asarray(pred, np.float64)
    y = np.asarray(truth, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two 2-D images of one shape, got {x.shape}, {y.shape}")
    m = np.ones(x.shape, bool) if mask is None else np.asarray(mask, bool)
    m = m & np.isfinite(x) & np.isfinite(y)
    if m.sum() < 4:
        return float("nan")
    rng = robust_range(y[m]) if data_range is None else float(data_range)
    if not np.isfinite(rng) or rng <= 0:
        return float("nan")
    w = m.astype(np.float64)
    x = np.where(m, x, 0.0)
    y = np.where(m, y, 0.0)

    def g(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma_px, mode="constant", truncate=3.5)

    wsum = g(w)
    ok = m & (wsum > 0.5 * wsum.max())
    den = np.where(wsum > 0, wsum, 1.0)
    mx, my = g(x * w) / den, g(y * w) / den
    vx = g(x * x * w) / den - mx * mx
    vy = g(y * y * w) / den - my * my
    cxy = g(x * y * w) / den - mx * my
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[ok].mean()) if ok.any() else float("nan")


def local_pcc_map(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                  window_px: int, min_coverage: float = 0.5) -> np.ndarray:
    """PCC of ``pred`` and ``truth`` in a ``window_px`` square window around each pixel.

    Only pixels inside ``mask`` count; a window whose mask coverage is below
    ``min_coverage``, or where either image is flat, is NaN. Same shape as the inputs.
    """
    window_px = max(3, int(window_px))
    m = np.asarray(mask, bool) & np.isfinite(pred) & np.isfinite(truth)
    w = m.astype(np.float64)
    x = np.where(m, np.asarray(pred, np.float64), 0.0)
    y = np.where(m, np.asarray(truth, np.float64), 0.0)
    # centre each image so the running sums do not lose precision to a large offset
    if m.any():
        x = np.where(m, x - x[m].mean(), 0.0)
        y = np.where(m, y - y[m].mean(), 0.0)

    def u(a: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(a, window_px, mode="constant")

    cover = u(w)
    den = np.where(cover > 0, cover, 1.0)
    mx, my = u(x * w) / den, u(y * w) / den
    vx = u(x * x * w) / den - mx * mx
    vy = u(y * y * w) / den - my * my
    cxy = u(x * y * w) / den - mx * my
    eps = 1e-12 * max(float(np.abs(x).max(initial=0)) ** 2, float(np.abs(y).max(initial=0)) ** 2,
                      1e-30)
    good = (cover >= min_coverage) & (vx > eps) & (vy > eps)
    out = np.full(x.shape, np.nan)
    out[good] = cxy[good] / np.sqrt(vx[good] * vy[good])
    return np.clip(out, -1, 1)


def bootstrap_ci(values: list[float] | np.ndarray, level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile-bootstrap confidence interval (mean, lo, hi).

    Resamples the values (one per section) with replacement. NaN values are left out; with
    fewer than two values the interval is (NaN, NaN): one section says nothing about
    the spread between sections.
    """
    v = np.asarray([float(x) for x in values], np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return mean, float(lo), float(hi)
