"""Register: FM → EM alignment, coarse from stage metadata, refined with SimpleITK.

The FM and EM images of one section come from the same stage, so the stage
metadata (centre position, pixel size, rotation) places them roughly; the
residual of a few hundred nm is removed here by maximising Mattes mutual
information between one FM channel and the EM smoothed to a similar scale.

Coordinates: the fixed image is the EM in an "EM frame" in nm (x = column ·
EM pixel, y = row · EM pixel, rows down); the moving image is the FM channel in
its own pixel frame in nm. The stage metadata gives an initial affine between
the two; the registration estimates a small correction (rigid by default) on
the EM side, after an exhaustive translation search that makes the capture
range independent of the optimiser.

The result, ``fm_to_em_px``, is a 3×3 affine mapping FM pixel coordinates
(x = column, y = row, pixel centres at integers) to EM pixel coordinates.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import io
from .geometry import (
    ImageGeometry,
    apply_affine,
    geometry_from_meta,
    moving_to_fixed_px,
    smooth_resample,
    warp,
)

log = logging.getLogger(__name__)

METRIC_NAME = "MattesMutualInformation"


@dataclass(frozen=True)
class RegistrationParams:
    """Registration settings (see config ``register``)."""

    transform: str = "rigid"  # rigid | similarity | affine
    pixel_size_nm: float = 50.0  # working pixel size of the fixed EM image
    max_shift_um: float = 2.0  # half-width of the exhaustive translation search
    search_step_um: float = 0.2
    iterations: int = 200
    histogram_bins: int = 32
    sampling_fraction: float = 0.3
    seed: int = 42


@dataclass
class RegistrationResult:
    """FM → EM transforms and quality measures of one section."""

    fm_to_em_px: np.ndarray
    fm_to_em_px_metadata: np.ndarray
    metric_metadata: float
    metric_registered: float
    iterations: int
    stop_condition: str
    search_shift_nm: tuple[float, float]
    warnings: list[str] = field(default_factory=list)
    fixed: np.ndarray | None = None  # smoothed EM at the working pixel size (QC)
    fixed_px_to_em_px: np.ndarray | None = None

    def correction(self, fm_shape_yx: tuple[int, int], em_pixel_m: float) -> dict:
        """Shift (nm, stage frame: x right, y up) and rotation (°) of the FM centre."""
        centre = np.array([(fm_shape_yx[1] - 1) / 2.0, (fm_shape_yx[0] - 1) / 2.0])
        before = apply_affine(self.fm_to_em_px_metadata, centre)
        after = apply_affine(self.fm_to_em_px, centre)
        d = (after - before) * em_pixel_m * 1e9
        rot = _angle(self.fm_to_em_px) - _angle(self.fm_to_em_px_metadata)
        return {
            "shift_nm": [float(d[0]), float(-d[1])],  # EM rows grow down, stage y grows up
            "shift_magnitude_nm": float(np.hypot(*d)),
            "rotation_deg": float(math.degrees(math.atan2(math.sin(rot), math.cos(rot)))),
        }


def _angle(m: np.ndarray) -> float:
    return math.atan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1])


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


def _new_transform(kind: str, centre: tuple[float, float]) -> sitk.Transform:
    if kind == "rigid":
        t: sitk.Transform = sitk.Euler2DTransform()
    elif kind == "similarity":
        t = sitk.Similarity2DTransform()
    elif kind == "affine":
        t = sitk.AffineTransform(2)
    else:
        raise ValueError(f"unknown transform {kind!r} (rigid, similarity or affine)")
    t.SetCenter(centre)
    return t


def _method(params: RegistrationParams) -> sitk.ImageRegistrationMethod:
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.histogram_bins)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(params.sampling_fraction, params.seed)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetNumberOfThreads(1)
    return r


def register_images(
    em: np.ndarray,
    em_geometry: ImageGeometry,
    fm: np.ndarray,
    fm_geometry: ImageGeometry,
    params: RegistrationParams = RegistrationParams(),
) -> RegistrationResult:
    """Register one FM channel (moving) to the EM image (fixed).

    Runs single-threaded so that the same input gives the same result, bit for
    bit, whatever the number of cores (the images are small).

    Args:
        em: EM image (Y, X).
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


def _register(em: np.ndarray, em_geometry: ImageGeometry, fm: np.ndarray,
              fm_geometry: ImageGeometry, params: RegistrationParams) -> RegistrationResult:
    em_px_nm = em_geometry.pixel_size_m[0] * 1e9
    fm_px_nm = (fm_geometry.pixel_size_m[0] * 1e9, fm_geometry.pixel_size_m[1] * 1e9)
    meta = moving_to_fixed_px(fm_geometry, em_geometry)  # FM px -> EM px

    # fixed: EM smoothed to about the FM resolution, sampled at the working pixel size
    factor = params.pixel_size_nm / em_px_nm
    sigma_em_px = 0.5 * min(fm_px_nm) / em_px_nm
    fixed_np, fixed_to_em = smooth_resample(em, factor, sigma_px=sigma_em_px)
    fixed_np = _standardise(fixed_np)
    moving_np = _standardise(fm.astype(np.float32))
    fixed = _to_sitk(fixed_np, (params.pixel_size_nm, params.pixel_size_nm),
                     (fixed_to_em[0, 2] * em_px_nm, fixed_to_em[1, 2] * em_px_nm))
    moving = _to_sitk(moving_np, fm_px_nm, (0.0, 0.0))

    # EM-frame nm -> FM-frame nm, from the stage metadata
    d_em = np.diag([em_px_nm, em_px_nm, 1.0])
    d_fm = np.diag([fm_px_nm[0], fm_px_nm[1], 1.0])
    initial = d_fm @ np.linalg.inv(meta) @ np.linalg.inv(d_em)
    centre = ((em.shape[1] - 1) / 2.0 * em_px_nm, (em.shape[0] - 1) / 2.0 * em_px_nm)

    # 1. exhaustive translation search (capture range = max_shift_um)
    search = sitk.TranslationTransform(2)
    steps = round(params.max_shift_um / params.search_step_um)
    shift = (0.0, 0.0)
    if steps > 0:
        r = _method(params)
        r.SetMovingInitialTransform(_affine_to_sitk(initial))
        r.SetInitialTransform(search, inPlace=True)
        r.SetOptimizerAsExhaustive([steps, steps], stepLength=params.search_step_um * 1e3)
        r.SetOptimizerScales([1.0, 1.0])
        r.SetShrinkFactorsPerLevel([2])
        r.SetSmoothingSigmasPerLevel([1.0])
        r.Execute(fixed, moving)
        shift = tuple(float(v) for v in search.GetOffset())

    # 2. gradient refinement of the chosen transform, multi-resolution
    tr = _new_transform(params.transform, centre)
    tr.SetTranslation(shift)
    r = _method(params)
    r.SetMovingInitialTransform(_affine_to_sitk(initial))
    r.SetInitialTransform(tr, inPlace=True)
    r.SetOptimizerAsRegularStepGradientDescent(
        learningRate=params.search_step_um * 1e3 / 2, minStep=0.05,
        numberOfIterations=params.iterations, relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel([4, 2, 1])
    r.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    r.Execute(fixed, moving)
    correction = _sitk_to_matrix(tr)

    # metric at the metadata transform vs after registration, same sampling
    metric_meta = _metric(fixed, moving, initial, np.eye(3), params)
    metric_reg = _metric(fixed, moving, initial, correction, params)
    warnings: list[str] = []
    total = initial @ correction  # EM nm -> FM nm
    fm_to_em = np.linalg.inv(np.linalg.inv(d_fm) @ total @ d_em)
    if not metric_reg < metric_meta:
        warnings.append(
            f"registration did not improve mutual information ({metric_reg:.4f} vs "
            f"{metric_meta:.4f} at the stage metadata); kept the stage metadata"
        )
        fm_to_em = meta.copy()
    return RegistrationResult(
        fm_to_em_px=fm_to_em,
        fm_to_em_px_metadata=meta,
        metric_metadata=metric_meta,
        metric_registered=metric_meta if warnings else metric_reg,
        iterations=int(r.GetOptimizerIteration()),
        stop_condition=r.GetOptimizerStopConditionDescription(),
        search_shift_nm=shift,  # type: ignore[arg-type]
        warnings=warnings,
        fixed=fixed_np,
        fixed_px_to_em_px=fixed_to_em,
    )


def _standardise(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)


def _metric(fixed: sitk.Image, moving: sitk.Image, initial: np.ndarray,
            correction: np.ndarray, params: RegistrationParams) -> float:
    r = _method(params)
    r.SetMovingInitialTransform(_affine_to_sitk(initial))
    r.SetInitialTransform(_affine_to_sitk(correction))
    return float(r.MetricEvaluate(fixed, moving))


def overlay_png(result: RegistrationResult, fm: np.ndarray, path: str | Path,
                title: str) -> None:
    """QC figure: EM (magenta) with FM (green), at stage metadata and registered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert result.fixed is not None and result.fixed_px_to_em_px is not None
    fixed = result.fixed
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4), constrained_layout=True)
    for ax, m, label in ((axes[0], result.fm_to_em_px_metadata, "stage metadata"),
                         (axes[1], result.fm_to_em_px, "registered")):
        fm_to_fixed = np.linalg.inv(result.fixed_px_to_em_px) @ m
        warped = warp(fm, fm_to_fixed, fixed.shape)
        g = _standardise(np.nan_to_num(warped, nan=float(np.nanmin(warped))))
        rgb = np.stack([fixed, g, fixed], axis=-1)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"{label}: EM magenta, FM green")
        ax.set_axis_off()
    fig.suptitle(title)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def params_from_config(settings: dict, seed: int) -> RegistrationParams:
    """RegistrationParams from the config ``register`` mapping (``channel`` is separate)."""
    keys = RegistrationParams.__dataclass_fields__
    return RegistrationParams(**{k: v for k, v in settings.items() if k in keys}, seed=seed)


def run(ingest_json: str | Path, ingest_npz: str | Path, channel: str | None,
        settings: dict, seed: int, json_path: str | Path, png_path: str | Path) -> dict:
    """Register one section and write its JSON and QC overlay (the rule's entry point)."""
    params = params_from_config(settings, seed)
    meta = io.read_json(ingest_json)
    arrays = io.load_npz(ingest_npz)
    names = [c["name"] for c in meta["fm"]["channels"]]
    channel = channel or names[0]
    if channel not in names:
        raise ValueError(f"register.channel {channel!r} is not among the ingested channels "
                         f"{names}; set it to one of them")
    ci = names.index(channel)
    em_geom = geometry_from_meta(meta["em"])
    fm_geom = geometry_from_meta(meta["fm"])
    result = register_images(arrays["em"], em_geom, arrays["fm"][ci], fm_geom, params)
    corr = result.correction(fm_geom.shape_yx, em_geom.pixel_size_m[0])
    out = {
        "section": meta["section"],
        "fm_to_em_px": result.fm_to_em_px,
        "fm_to_em_px_metadata": result.fm_to_em_px_metadata,
        "channel": channel,
        "transform": params.transform,
        "metric": {"name": METRIC_NAME, "stage_metadata": result.metric_metadata,
                   "registered": result.metric_registered,
                   "note": "negative mutual information: lower is better"},
        "correction": corr,
        "search_shift_nm": list(result.search_shift_nm),
        "optimizer": {"iterations_last_level": result.iterations,
                      "stop_condition": result.stop_condition},
        "params": params.__dict__,
        "warnings": result.warnings,
    }
    for w in result.warnings:
        log.warning("%s: %s", meta["section"], w)
    log.info("%s: correction %.0f nm (x %.0f, y %.0f), rotation %.3f°, MI %.4f -> %.4f",
             meta["section"], corr["shift_magnitude_nm"], *corr["shift_nm"],
             corr["rotation_deg"], result.metric_metadata, result.metric_registered)
    overlay_png(result, arrays["fm"][ci], png_path,
                f"{meta['section']}: {channel} on EM, correction "
                f"{corr['shift_magnitude_nm']:.0f} nm, {corr['rotation_deg']:.2f}°")
    io.write_json(json_path, out)
    return out
