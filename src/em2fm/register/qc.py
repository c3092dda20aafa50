"""QC figure of a registration: the FM (green) over the EM (magenta), one panel per transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io
from ..geometry import ImageGeometry, smooth_resample, smooth_resample_regions, warp
from ..scalebar import add_scalebar

QC_PIXEL_NM = 100.0  # EM shown at this pixel size (smoothed to the FM resolution)…
QC_MAX_PX = 1024  # …or coarser, so that no panel exceeds this many px a side (the PNG
# shows ~300 px per panel): memory and file size stop growing with the section


def standardise(a: np.ndarray) -> np.ndarray:
    """Scale to 0…1 between the 0.5th and 99.5th percentiles (NaN ignored), clipped."""
    lo, hi = np.nanpercentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)


def overlay_png(em, em_geometry: ImageGeometry, fm: np.ndarray,
                transforms: dict[str, np.ndarray], path: str | Path, title: str) -> None:
    """Write one panel per FM→EM px transform: EM magenta, FM green (white where both).

    ``em``: an array or a region reader (smoothed block by block, bounded memory).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    em_px_nm = em_geometry.pixel_size_m[0] * 1e9
    factor = max(QC_PIXEL_NM / em_px_nm, 1.0,
                 max(em_geometry.shape_yx) / QC_MAX_PX)
    resample = smooth_resample if isinstance(em, np.ndarray) else smooth_resample_regions
    fixed, fixed_to_em = resample(em, factor, sigma_px=0.5 * factor)
    fixed = standardise(fixed)
    n = len(transforms)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.6), constrained_layout=True,
                             squeeze=False)
    for ax, (label, m) in zip(axes[0], transforms.items(), strict=True):
        warped = warp(fm, np.linalg.inv(fixed_to_em) @ m, fixed.shape)
        g = standardise(np.nan_to_num(warped, nan=float(np.nanmin(warped))))
        ax.imshow(np.stack([fixed, g, fixed], axis=-1), interpolation="nearest")
        ax.set_title(label)
        ax.set_axis_off()
        add_scalebar(ax, em_px_nm * np.sqrt(abs(np.linalg.det(fixed_to_em[:2, :2]))),
                     fixed.shape[1])
    fig.suptitle(title)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=70)
    plt.close(fig)
