"""Multimodal registration: FM → EM from the stage metadata, refined with SimpleITK.

The FM and EM images of one section come from the same stage, so the stage
metadata (centre position, pixel size, rotation) places them roughly; the
residual of a few hundred nm, a fraction of a degree and a calibration error
of the FM pixel size (0.3–1 % on a SECOM) is estimated here by optimising a
multimodal metric between one FM channel and the EM smoothed to FM
resolution: Mattes mutual information (default) or the squared normalised
correlation.

Search, all inside the configured capture range (:class:`CaptureRange`):

1. **exhaustive coarse grid**: every shift on a square grid (``search_step_um``)
   × three rotations (−½, 0, +½ of the rotation range), on the EM binned to
   twice the working pixel size; the metric at every cell is kept (the
   *landscape*);
2. **multi-start local refinement** of the chosen transform (similarity by
   default: shift, rotation, isotropic scale) from the best distinct coarse
   minima, multi-resolution gradient descent; the best end point wins;
3. **checks**: an estimate on or beyond a bound of the capture range, or one
   whose metric is not better than at the stage metadata, is ``failed``; a
   landscape with a rival minimum nearly as deep as the best one is
   ``low_confidence`` (see :mod:`.status`).

Coordinates: the fixed image is the EM in an "EM frame" in nm (x = column ·
EM pixel, y = row · EM pixel, rows down); the moving image is the FM channel in
its own pixel frame in nm. The result, ``fm_to_em_px``, is a 3×3 affine
mapping FM pixel coordinates (x = column, y = row, pixel centres at integers)
to EM pixel coordinates. Runs single-threaded so that the same input gives the
same result, bit for bit, whatever the number of cores.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..geometry import (
    ImageGeometry,
    moving_to_fixed_px,
    smooth_resample,
    smooth_resample_regions,
)
from .landscape import (
    CaptureRange,
    Landscape,
    analyse,
    bound_violations,
    correction_summary,
)
from .qc import standardise

log = logging.getLogger(__name__)

METRICS = {"mattes": "Mattes mutual information (negative: lower is better)",
           "correlation": "squared normalised correlation (negative: lower is better)"}


@dataclass(frozen=True)
class RegistrationParams:
    """Multimodal registration settings (see config ``register``).

    Attributes:
        transform: correction model on top of the metadata (rigid, similarity, affine).
        metric: ``mattes`` (mutual information) or ``correlation``.
        pixel_size_nm: working pixel size of the smoothed EM for the local refinement (nm).
        max_shift_um: capture range of the shift, per axis (µm).
        max_rotation_deg: capture range of the rotation (°).
        max_scale: capture range of the isotropic scale error (fraction).
        search_step_um: step of the exhaustive shift grid (µm).
        starts: coarse minima refined locally (multi-start).
        iterations: optimiser iterations per resolution level.
        histogram_bins: Mattes histogram bins.
        sampling_fraction: fraction of fixed pixels sampled by the metric.
        seed: sampling seed.
    """

    transform: str = "similarity"
    metric: str = "mattes"
    pixel_size_nm: float = 100.0
    max_shift_um: float = 2.5
    max_rotation_deg: float = 3.0
    max_scale: float = 0.02
    search_step_um: float = 0.2
    starts: int = 3
    iterations: int = 200
    histogram_bins: int = 32
    sampling_fraction: float = 0.3
    seed: int = 42

    @property
    def capture(self) -> CaptureRange:
        """The capture range these settings define."""
        return CaptureRange(self.max_shift_um, self.max_rotation_deg, self.max_scale)


@dataclass
class RegistrationResult:
    """FM → EM transforms of one section and the evidence behind them."""

    fm_to_em_px: np.ndarray
    fm_to_em_px_metadata: np.ndarray
    metric_metadata: float
    metric_registered: float
    landscape: Landscape
    bound_violations: list[str]
    starts: list[dict]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    fixed: np.ndarray | None = None  # smoothed EM at the working pixel size (QC)
    fixed_px_to_em_px: np.ndarray | None = None

    def correction(self, em_shape_yx: tuple[int, int], em_pixel_m: float) -> dict:
        """Shift (nm, stage frame), rotation (°, CCW in the stage frame) and scale error."""
        return correction_summary(self.fm_to_em_px, self.fm_to_em_px_metadata, em_shape_yx,
                                  em_pixel_m)


def _to_sitk(image: np.ndarray, spacing: tuple[float, float],
             origin: tuple[float, float]) -> sitk.Image:
    out = sitk.GetImageFromArray(np.ascontiguousarray(image, dtype=np.float32))
    out.SetSpacing([float(s) for s in spacing])
    out.SetOrigin([float(o) for o in origin])
    return out


def _affine_to_sitk(m: np.ndarray) -> sitk.AffineTransform:
    t = sitk.AffineTransform(2)
    t.SetMatrix(m[:2, :2].ravel().tolist())
    t.SetTranslation(m[:2, 2].tolist())
    return t


def _sitk_to_matrix(t: sitk.Transform) -> np.ndarray:
    """3×3 matrix of a SimpleITK matrix-offset transform (Euler, Similarity, Affine)."""
    a = np.array(t.GetMatrix(), dtype=float).reshape(2, 2)
    c = np.array(t.GetCenter(), dtype=float)
    tr = np.array(t.GetTranslation(), dtype=float)
    out = np.eye(3)
    out[:2, :2] = a
    out[:2, 2] = tr + c - a @ c
    return out


def _new_transform(kind: str, centre: tuple[float, float], angle: float = 0.0,
                   shift: tuple[float, float] = (0.0, 0.0)) -> sitk.Transform:
    if kind == "rigid":
        t: sitk.Transform = sitk.Euler2DTransform()
    elif kind == "similarity":
        t = sitk.Similarity2DTransform()
    elif kind == "affine":
        t = sitk.AffineTransform(2)
    else:
        raise ValueError(f"unknown transform {kind!r} (rigid, similarity or affine)")
    t.SetCenter(centre)
    if kind == "affine":
        c, s = math.cos(angle), math.sin(angle)
        t.SetMatrix([c, -s, s, c])
    else:
        t.SetAngle(angle)
    t.SetTranslation(shift)
    return t


def _method(params: RegistrationParams) -> sitk.ImageRegistrationMethod:
    r = sitk.ImageRegistrationMethod()
    if params.metric == "mattes":
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.histogram_bins)
    elif params.metric == "correlation":
        r.SetMetricAsCorrelation()
    else:
        raise ValueError(f"unknown register.metric {params.metric!r} ({', '.join(METRICS)})")
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(params.sampling_fraction, params.seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetNumberOfThreads(1)
    return r


def register_images(
    em,
    em_geometry: ImageGeometry,
    fm: np.ndarray,
    fm_geometry: ImageGeometry,
    params: RegistrationParams = RegistrationParams(),
) -> RegistrationResult:
    """Register one FM channel (moving) to the EM image (fixed), inside the capture range.

    Args:
        em: EM image (Y, X): an array, or a region reader (``shape``, ``read``) such as
            :func:`em2fm.lazy.open_array` of the ingest npz, smoothed block by block
            (bounded memory; the same fixed image bit for bit).
        em_geometry: EM stage placement from the export.
        fm: one FM channel (Y, X).
        fm_geometry: FM stage placement from the export.
        params: settings.
    """
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(em, em_geometry, fm, fm_geometry, params)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _register(em, em_geometry: ImageGeometry, fm: np.ndarray,
              fm_geometry: ImageGeometry, params: RegistrationParams) -> RegistrationResult:
    t0 = time.perf_counter()
    em_px_nm = em_geometry.pixel_size_m[0] * 1e9
    fm_px_nm = (fm_geometry.pixel_size_m[0] * 1e9, fm_geometry.pixel_size_m[1] * 1e9)
    meta = moving_to_fixed_px(fm_geometry, em_geometry)  # FM px -> EM px

    # fixed: EM smoothed to about the FM resolution, sampled at the working pixel size
    factor = max(params.pixel_size_nm / em_px_nm, 1.0)
    sigma_em_px = 0.5 * min(fm_px_nm) / em_px_nm
    if isinstance(em, np.ndarray):
        fixed_np, fixed_to_em = smooth_resample(em, factor, sigma_px=sigma_em_px)
    else:
        fixed_np, fixed_to_em = smooth_resample_regions(em, factor, sigma_px=sigma_em_px)
    fixed_np = standardise(fixed_np)
    moving_np = standardise(fm.astype(np.float32))
    work_nm = factor * em_px_nm
    fixed = _to_sitk(fixed_np, (work_nm, work_nm),
                     (fixed_to_em[0, 2] * em_px_nm, fixed_to_em[1, 2] * em_px_nm))
    moving = _to_sitk(moving_np, fm_px_nm, (0.0, 0.0))

    # EM-frame nm -> FM-frame nm, from the stage metadata
    d_em = np.diag([em_px_nm, em_px_nm, 1.0])
    d_fm = np.diag([fm_px_nm[0], fm_px_nm[1], 1.0])
    initial = d_fm @ np.linalg.inv(meta) @ np.linalg.inv(d_em)
    centre = ((em.shape[1] - 1) / 2.0 * em_px_nm, (em.shape[0] - 1) / 2.0 * em_px_nm)

    grid, angles = _coarse_grid(fixed, moving, initial, centre, params)
    landscape = analyse(grid.min(axis=0), params.search_step_um)
    starts = _start_points(grid, angles, params)

    best: tuple[float, np.ndarray, dict] | None = None
    tried = []
    for start in starts:
        tr = _new_transform(params.transform, centre, start["angle_rad"], start["shift_nm"])
        r = _method(params)
        r.SetMovingInitialTransform(_affine_to_sitk(initial))
        r.SetInitialTransform(tr, inPlace=True)
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=params.search_step_um * 1e3 / 2, minStep=1.0,
            numberOfIterations=params.iterations, relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-8,
        )
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetShrinkFactorsPerLevel([2, 1])
        r.SetSmoothingSigmasPerLevel([1.0, 0.0])
        r.Execute(fixed, moving)
        corr = _sitk_to_matrix(tr)
        value = _metric(fixed, moving, initial, corr, params)
        tried.append({"coarse_shift_nm": list(start["shift_nm"]),
                      "coarse_rotation_deg": math.degrees(start["angle_rad"]),
                      "metric": value, "iterations": int(r.GetOptimizerIteration()),
                      "stop": r.GetOptimizerStopConditionDescription()})
        if best is None or value < best[0]:
            best = (value, corr, tried[-1])
    assert best is not None
    metric_reg, correction, _ = best
    metric_meta = _metric(fixed, moving, initial, np.eye(3), params)

    total = initial @ correction  # EM nm -> FM nm
    fm_to_em = np.linalg.inv(np.linalg.inv(d_fm) @ total @ d_em)
    summary = correction_summary(fm_to_em, meta, em_geometry.shape_yx,
                                 em_geometry.pixel_size_m[0])
    violations = bound_violations(summary, params.capture)
    if landscape.on_edge:
        violations.append("the best cell of the exhaustive shift search lies on the edge "
                          f"of the capture range (±{params.max_shift_um:g} µm)")
    warnings: list[str] = []
    if not metric_reg < metric_meta:
        warnings.append(f"registration did not improve the metric ({metric_reg:.4f} vs "
                        f"{metric_meta:.4f} at the stage metadata)")
    return RegistrationResult(
        fm_to_em_px=fm_to_em,
        fm_to_em_px_metadata=meta,
        metric_metadata=metric_meta,
        metric_registered=metric_reg,
        landscape=landscape,
        bound_violations=violations,
        starts=tried,
        seconds=time.perf_counter() - t0,
        warnings=warnings,
        fixed=fixed_np,
        fixed_px_to_em_px=fixed_to_em,
    )


def _coarse_grid(fixed: sitk.Image, moving: sitk.Image, initial: np.ndarray,
                 centre: tuple[float, float], params: RegistrationParams
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Metric on the exhaustive grid: (rotations, y shifts, x shifts), and the rotations (rad).

    One SimpleITK exhaustive run over rotation × shift (Euler transform about the EM
    centre), at half the working resolution; an observer records every cell.
    """
    n = max(1, round(params.max_shift_um / params.search_step_um))
    half_rot = math.radians(params.max_rotation_deg) / 2
    n_rot = 1 if half_rot > 0 else 0
    tr = sitk.Euler2DTransform()
    tr.SetCenter(centre)
    r = _method(params)
    r.SetMovingInitialTransform(_affine_to_sitk(initial))
    r.SetInitialTransform(tr, inPlace=True)
    r.SetOptimizerAsExhaustive([n_rot, n, n], stepLength=1.0)
    r.SetOptimizerScales([half_rot or 1.0, params.search_step_um * 1e3,
                          params.search_step_um * 1e3])
    r.SetShrinkFactorsPerLevel([2])
    r.SetSmoothingSigmasPerLevel([0.0])
    values: list[float] = []
    r.AddCommand(sitk.sitkIterationEvent, lambda: values.append(r.GetMetricValue()))
    r.Execute(fixed, moving)
    k = 2 * n + 1
    grid = np.asarray(values, float).reshape(k, k, 2 * n_rot + 1)  # (y, x, rotation)
    angles = (np.arange(2 * n_rot + 1) - n_rot) * half_rot
    return np.moveaxis(grid, -1, 0), angles


def _start_points(grid: np.ndarray, angles: np.ndarray, params: RegistrationParams
                  ) -> list[dict]:
    """The ``params.starts`` best coarse cells that are local minima, at least 0.6 µm apart."""
    from scipy import ndimage

    n = grid.shape[1] // 2
    best = grid.min(axis=0)
    rot_of = grid.argmin(axis=0)
    v = np.where(np.isfinite(best), best, np.inf)
    local = v <= ndimage.minimum_filter(v, size=3, mode="nearest")
    order = np.argsort(np.where(local, v, np.inf), axis=None)
    chosen: list[tuple[int, int]] = []
    for k in order:
        if not np.isfinite(v.flat[k]) or len(chosen) >= params.starts:
            break
        iy, ix = np.unravel_index(int(k), v.shape)
        if all(math.hypot(iy - a, ix - b) * params.search_step_um >= 0.6 for a, b in chosen):
            chosen.append((int(iy), int(ix)))
    step_nm = params.search_step_um * 1e3
    return [{"shift_nm": ((ix - n) * step_nm, (iy - n) * step_nm),
             "angle_rad": float(angles[rot_of[iy, ix]])} for iy, ix in chosen]


def _metric(fixed: sitk.Image, moving: sitk.Image, initial: np.ndarray,
            correction: np.ndarray, params: RegistrationParams) -> float:
    r = _method(params)
    r.SetMovingInitialTransform(_affine_to_sitk(initial))
    r.SetInitialTransform(_affine_to_sitk(correction))
    return float(r.MetricEvaluate(fixed, moving))
