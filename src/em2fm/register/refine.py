"""Prediction-driven refinement: the measured FM registered to the network's prediction.

Once a first model exists, its prediction from a section's EM is an image of
the same kind as the measured FM: a monomodal problem. Each round registers
the measured FM (all channels) to that prediction by normalised
cross-correlation (NCC; channels weighted by how well their prediction
correlates at best, :func:`channel_weights`) on the FM-resolution target grid:

1. an exhaustive shift search by FFT over the whole capture range around the
   stage metadata (the rotation and scale of the previous estimate kept);
2. a bounded local refinement of shift, rotation and isotropic scale (Nelder–Mead)
   from the best shift;
3. the new estimate is *accepted* only if it raises the NCC above that of the
   previous estimate; its evidence (NCC, landscape, bounds, agreement with the
   multimodal estimate) goes to :mod:`.status`.

The prediction is made from the EM alone; the measured FM is only the moving
image here, never a network input.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal

from ..geometry import apply_affine, warp
from .landscape import (
    CaptureRange,
    Landscape,
    analyse,
    bound_violations,
    correction_summary,
    decompose,
    similarity_about,
)

log = logging.getLogger(__name__)


@dataclass
class RefineResult:
    """Outcome of one prediction-driven round for one section."""

    fm_to_em_px: np.ndarray  # the round's estimate (the previous one if not accepted)
    candidate: np.ndarray  # the best transform found this round
    ncc_previous: float
    ncc_candidate: float
    accepted: bool
    landscape: Landscape
    bound_violations: list[str]
    seconds: float


def _fm_on_grid(fm: np.ndarray, fm_to_target: np.ndarray, shape_yx: tuple[int, int],
                origin_yx: tuple[int, int] = (0, 0)) -> np.ndarray:
    """FM channels (C, Y, X) bilinearly sampled on a target grid; NaN outside the FM.

    ``origin_yx`` offsets the grid (target px), for grids extended beyond the target.
    """
    to_grid = np.array([[1.0, 0.0, -origin_yx[1]], [0.0, 1.0, -origin_yx[0]], [0.0, 0.0, 1.0]])
    return warp(fm, to_grid @ fm_to_target, shape_yx, order=1)


def ncc(pred: np.ndarray, fm: np.ndarray, mask: np.ndarray | None = None,
        weights: np.ndarray | None = None) -> float:
    """Weighted mean over channels of the normalised cross-correlation where both are defined.

    ``weights`` (one per channel, default equal) favour the channels whose prediction
    carries the structure; see :func:`channel_weights`.
    """
    ok = np.all(np.isfinite(fm), axis=0) & np.all(np.isfinite(pred), axis=0)
    if mask is not None:
        ok &= mask
    if ok.sum() < 16:
        return float("nan")
    vals = []
    for c in range(pred.shape[0]):
        a = pred[c][ok].astype(np.float64)
        b = fm[c][ok].astype(np.float64)
        a, b = a - a.mean(), b - b.mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        vals.append(float((a * b).sum() / den) if den > 0 else 0.0)
    return float(np.average(vals, weights=weights))


def channel_weights(peaks: np.ndarray) -> np.ndarray:
    """Channel weights from each channel's best NCC: ``max(peak, 0)²``, normalised.

    A channel whose prediction hardly correlates with its measurement anywhere (no islet in
    the field for insulin, say) would only add noise to the landscape.
    """
    w = np.clip(np.nan_to_num(np.asarray(peaks, float)), 0.0, None) ** 2
    return w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))


def ncc_map(pred: np.ndarray, fm_ext: np.ndarray, min_coverage: float = 0.98) -> np.ndarray:
    """NCC of ``pred`` (C, H, W) at every offset inside ``fm_ext`` (C, H+2R, W+2R), by FFT.

    Returns (C, 2R+1, 2R+1) maps, one per channel (NaN where the FM covers less than
    ``min_coverage`` of the window). Offset (R, R) is the unshifted placement.
    """
    _, h, w = pred.shape
    n = h * w
    ones = np.ones((h, w))
    valid = np.isfinite(fm_ext).all(axis=0).astype(np.float64)
    cover = signal.fftconvolve(valid, ones, mode="valid")
    out = np.zeros((pred.shape[0], *cover.shape))
    for c in range(pred.shape[0]):
        t = pred[c].astype(np.float64)
        t = t - t.mean()
        tt = float((t * t).sum())
        img = np.where(valid > 0, np.nan_to_num(fm_ext[c].astype(np.float64)), 0.0)
        num = signal.fftconvolve(img, t[::-1, ::-1], mode="valid")
        s1 = signal.fftconvolve(img, ones, mode="valid")
        s2 = signal.fftconvolve(img * img, ones, mode="valid")
        var = np.maximum(s2 - s1 * s1 / n, 1e-12)
        out[c] = num / np.sqrt(tt * var) if tt > 0 else 0.0
    out[:, cover < min_coverage * n] = np.nan
    return out


def refine_to_prediction(
    fm: np.ndarray,
    pred: np.ndarray,
    target_to_em_px: np.ndarray,
    fm_to_em_previous: np.ndarray,
    fm_to_em_metadata: np.ndarray,
    em_shape_yx: tuple[int, int],
    em_pixel_m: float,
    capture: CaptureRange,
) -> RefineResult:
    """Register the measured FM to a prediction on the target grid (one round).

    Args:
        fm: measured FM (C, Y, X), camera units.
        pred: prediction (C, H, W) on the target grid, any affine units per channel.
        target_to_em_px: 3×3 affine target px → EM px of the prediction's grid.
        fm_to_em_previous: the estimate of the previous round (FM px → EM px).
        fm_to_em_metadata: the stage-metadata transform (the capture range's centre).
        em_shape_yx: EM image shape (px).
        em_pixel_m: EM pixel size (m).
        capture: capture range around the stage metadata.
    """
    t0 = time.perf_counter()
    fm = fm.astype(np.float32)
    h, w = pred.shape[-2:]
    em_to_target = np.linalg.inv(target_to_em_px)
    target_px_nm = float(np.sqrt(abs(np.linalg.det(target_to_em_px[:2, :2])))) * em_pixel_m * 1e9
    centre_t = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    previous_t = em_to_target @ fm_to_em_previous  # FM px -> target px
    metadata_t = em_to_target @ fm_to_em_metadata
    # the previous estimate's shift from the metadata, in target px (at the grid centre)
    prev_shift = apply_affine(previous_t @ np.linalg.inv(metadata_t), centre_t) - centre_t

    # 1. exhaustive shift search over the whole capture range around the metadata
    reach = math.ceil(capture.max_shift_um * 1e3 / target_px_nm)
    off = np.round(prev_shift).astype(int)
    radius = reach + int(np.abs(off).max())
    ext = _fm_on_grid(fm, previous_t, (h + 2 * radius, w + 2 * radius), (-radius, -radius))
    maps = ncc_map(pred, ext)
    weights = channel_weights(np.nanmax(maps.reshape(len(maps), -1), axis=1))
    scores = np.tensordot(weights, maps, axes=1)
    # map offsets (FM content moved by -d when the window moves by +d) to shifts of the FM
    shifts = -(np.arange(2 * radius + 1) - radius)
    sy = shifts[:, None] + prev_shift[1]
    sx = shifts[None, :] + prev_shift[0]
    inside = (np.abs(sy) <= reach) & (np.abs(sx) <= reach)
    box = np.where(inside, -scores, np.nan)[::-1, ::-1]  # rows/cols: shift -reach…+reach
    crop = box[radius - reach - off[1]: radius + reach - off[1] + 1,
               radius - reach - off[0]: radius + reach - off[0] + 1]
    landscape = analyse(crop, target_px_nm * 1e-3)
    k = np.nanargmin(box)
    iy, ix = np.unravel_index(int(k), box.shape)
    start_shift = np.array([ix - radius, iy - radius], float)  # target px, relative to prev

    # 2. bounded local refinement of (shift, rotation, scale) about the grid centre
    r_edge = 0.5 * math.hypot(h, w)
    pred_mask = np.all(np.isfinite(pred), axis=0)

    def transform(u: np.ndarray) -> np.ndarray:
        corr = similarity_about(centre_t, u[:2], u[2] / r_edge, 1.0 + u[3] / r_edge)
        return corr @ previous_t

    def cost(u: np.ndarray) -> float:
        v = ncc(pred, _fm_on_grid(fm, transform(u), (h, w)), pred_mask, weights)
        return -v if np.isfinite(v) else 1.0

    ang_b = math.radians(capture.max_rotation_deg) * r_edge
    sc_b = capture.max_scale * r_edge
    lim = reach * 1.0
    _, prev_angle, prev_scale = decompose(previous_t @ np.linalg.inv(metadata_t), centre_t)
    bounds = [(-lim - prev_shift[0], lim - prev_shift[0]),
              (-lim - prev_shift[1], lim - prev_shift[1]),
              (-ang_b - prev_angle * r_edge, ang_b - prev_angle * r_edge),
              (-sc_b - (prev_scale - 1) * r_edge, sc_b - (prev_scale - 1) * r_edge)]
    u0 = np.array([*start_shift, 0.0, 0.0])
    u0 = np.array([np.clip(v, lo, hi) for v, (lo, hi) in zip(u0, bounds, strict=True)])
    simplex = np.vstack([u0, u0 + np.diag([0.5, 0.5, 0.5, 0.5])])
    res = optimize.minimize(cost, u0, method="Nelder-Mead", bounds=bounds,
                            options={"initial_simplex": simplex, "xatol": 1e-3,
                                     "fatol": 1e-7, "maxfev": 800})
    if not res.fun <= cost(u0):  # a local search never ends worse than its start
        res.x, res.fun = u0, cost(u0)
    candidate_t = transform(res.x)
    candidate = target_to_em_px @ candidate_t
    ncc_prev = -cost(np.zeros(4))
    ncc_new = -float(res.fun)
    summary = correction_summary(candidate, fm_to_em_metadata, em_shape_yx, em_pixel_m)
    violations = bound_violations(summary, capture)
    if landscape.on_edge:
        violations.append("the best NCC of the exhaustive shift search lies on the edge of "
                          f"the capture range (±{capture.max_shift_um:g} µm)")
    accepted = bool(ncc_new > ncc_prev + 1e-6) and not violations
    return RefineResult(
        fm_to_em_px=candidate if accepted else fm_to_em_previous.copy(),
        candidate=candidate, ncc_previous=float(ncc_prev), ncc_candidate=ncc_new,
        accepted=accepted, landscape=landscape, bound_violations=violations,
        seconds=time.perf_counter() - t0,
    )
