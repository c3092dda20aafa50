"""Capture range and metric landscapes: the evidence behind a registration status.

A registration estimates a *correction* on top of the stage metadata: a 3×3
affine ``C`` on EM pixel coordinates, ``fm_to_em = C @ fm_to_em_metadata``.
Its similarity part is summarised about the EM field centre as a shift (the
displacement of the centre, nm), a rotation (°, counter-clockwise in the
stage frame) and an isotropic scale (``s − 1``, dimensionless). The
configured *capture range* bounds all three; an estimate on or beyond a bound
is a failure, never a result.

A *landscape* is a metric sampled on a regular grid of shifts (lower is
better). Its evidence: whether the best cell lies on the edge of the grid
(the optimum may lie beyond the searched range), and how deep the best
*other* local minimum is compared with the best one (``second_peak_ratio``:
0 for a unique optimum, 1 for two equally good ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..geometry import apply_affine, rms_displacement


@dataclass(frozen=True)
class CaptureRange:
    """Largest correction of the stage metadata a registration may return.

    Attributes:
        max_shift_um: per axis, of the EM field centre (µm).
        max_rotation_deg: rotation about the EM field centre (°).
        max_scale: isotropic scale error ``|s − 1|`` (dimensionless).
    """

    max_shift_um: float = 2.5
    max_rotation_deg: float = 3.0
    max_scale: float = 0.02


def similarity_about(centre_xy: np.ndarray, shift_xy: np.ndarray, angle_rad: float,
                     scale: float) -> np.ndarray:
    """3×3 similarity in pixel coordinates: rotate/scale about ``centre_xy``, then shift.

    The angle is counter-clockwise in a frame whose y axis points *down* (pixel rows),
    i.e. clockwise on screen; :func:`decompose` uses the same convention.
    """
    c, s = math.cos(angle_rad) * scale, math.sin(angle_rad) * scale
    a = np.array([[c, -s], [s, c]])
    centre = np.asarray(centre_xy, float)
    out = np.eye(3)
    out[:2, :2] = a
    out[:2, 2] = centre - a @ centre + np.asarray(shift_xy, float)
    return out


def decompose(correction: np.ndarray, centre_xy: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Shift of ``centre_xy`` (px), rotation (rad) and scale of a correction's similarity part."""
    a = correction[:2, :2]
    angle = math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])
    scale = math.sqrt(abs(float(np.linalg.det(a))))
    centre = np.asarray(centre_xy, float)
    return apply_affine(correction, centre) - centre, angle, scale


def correction_summary(fm_to_em: np.ndarray, fm_to_em_metadata: np.ndarray,
                       em_shape_yx: tuple[int, int], em_pixel_m: float) -> dict:
    """Shift (nm, stage frame: x right, y up), rotation (°) and scale error of a correction.

    The rotation is counter-clockwise in the stage frame (Y up), as Odemis stores it.
    """
    correction = fm_to_em @ np.linalg.inv(fm_to_em_metadata)
    centre = np.array([(em_shape_yx[1] - 1) / 2.0, (em_shape_yx[0] - 1) / 2.0])
    shift, angle, scale = decompose(correction, centre)
    d = shift * em_pixel_m * 1e9
    return {
        "shift_nm": [float(d[0]), float(-d[1])],  # EM rows grow down, stage y grows up
        "shift_magnitude_nm": float(np.hypot(*d)),
        "rotation_deg": float(-math.degrees(angle)),  # pixel frame (y down) → stage (y up)
        "scale_error": float(scale - 1.0),
    }


def bound_violations(summary: dict, capture: CaptureRange, tolerance: float = 0.98) -> list[str]:
    """Parameters of a correction (see :func:`correction_summary`) at or beyond their bound.

    ``tolerance`` < 1 counts an estimate within 2 % of a bound as *on* it: an optimiser
    stopped there was held by the bound, not by the data.
    """
    out = []
    sx, sy = (abs(v) * 1e-3 for v in summary["shift_nm"])
    if max(sx, sy) >= tolerance * capture.max_shift_um:
        out.append(f"shift ({summary['shift_nm'][0]:.0f}, {summary['shift_nm'][1]:.0f}) nm "
                   f"reaches the capture range ±{capture.max_shift_um:g} µm (widen "
                   "register.max_shift_um if the stage metadata can be this far off)")
    if abs(summary["rotation_deg"]) >= tolerance * capture.max_rotation_deg:
        out.append(f"rotation {summary['rotation_deg']:.2f}° reaches the capture range "
                   f"±{capture.max_rotation_deg:g}° (register.max_rotation_deg)")
    if abs(summary["scale_error"]) >= tolerance * capture.max_scale:
        out.append(f"scale error {100 * summary['scale_error']:.2f} % reaches the capture "
                   f"range ±{100 * capture.max_scale:g} % (register.max_scale)")
    return out


@dataclass(frozen=True)
class Landscape:
    """Evidence from a metric sampled on a square grid of shifts (lower is better).

    Attributes:
        best_value: metric at the best cell.
        median_value: median metric over the grid (the "no match" level).
        second_value: best local minimum farther than the exclusion radius.
        second_peak_ratio: ``(median − second) / (median − best)``, 0 … 1.
        second_peak_distance_um: distance of that minimum from the best cell (µm).
        on_edge: the best cell lies on the edge of the grid.
        best_shift_um: shift ``(x, y)`` of the best cell (µm, EM pixel axes: y down).
        step_um: grid step (µm).
    """

    best_value: float
    median_value: float
    second_value: float
    second_peak_ratio: float
    second_peak_distance_um: float
    on_edge: bool
    best_shift_um: tuple[float, float]
    step_um: float

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def analyse(values: np.ndarray, step_um: float, exclusion_um: float = 0.9) -> Landscape:
    """Landscape evidence of ``values`` (rows: y shift, columns: x shift, centre = 0).

    Args:
        values: metric on a ``(2n+1) × (2n+1)`` grid of shifts, lower is better.
        step_um: grid step (µm).
        exclusion_um: radius (µm) around the best cell where other minima are its own
            shoulder, not a rival (FM structures and the PSF span a few hundred nm, so a
            minimum closer than ~1 µm belongs to the same optimum).
    """
    v = np.asarray(values, float)
    v = np.where(np.isfinite(v), v, np.nanmax(v) if np.isfinite(v).any() else 0.0)
    ny, nx = v.shape
    iy, ix = np.unravel_index(int(np.argmin(v)), v.shape)
    best, median = float(v[iy, ix]), float(np.median(v))
    yy, xx = np.mgrid[0:ny, 0:nx]
    dist = np.hypot(yy - iy, xx - ix) * step_um
    local_min = v <= ndimage.minimum_filter(v, size=3, mode="nearest")
    rivals = local_min & (dist > exclusion_um)
    if rivals.any():
        k = np.argmin(np.where(rivals, v, np.inf))
        second, second_dist = float(v.flat[k]), float(dist.flat[k])
    else:
        second, second_dist = median, float("nan")
    depth = median - best
    ratio = float(np.clip((median - second) / depth, 0.0, 1.0)) if depth > 0 else 1.0
    on_edge = iy in (0, ny - 1) or ix in (0, nx - 1)
    return Landscape(best, median, second, ratio, second_dist, bool(on_edge),
                     (float((ix - nx // 2) * step_um), float((iy - ny // 2) * step_um)),
                     float(step_um))


def rms_difference_px(a: np.ndarray, b: np.ndarray, points_xy: np.ndarray) -> float:
    """RMS distance between two FM→EM affines over FM ``points_xy``, in FM px.

    The EM-px distance is converted with the mean FM pixel size of ``a`` in EM px.
    """
    fm_px_in_em_px = math.sqrt(abs(float(np.linalg.det(a[:2, :2]))))
    return rms_displacement(a, b, points_xy) / fm_px_in_em_px
