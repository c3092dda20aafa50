"""Physical scale bars for image panels (report figures, registration QC)."""

from __future__ import annotations

import math

NICE = (1, 2, 5)


def nice_length_um(width_um: float, fraction: float = 0.2) -> float:
    """A round length (1, 2 or 5 × 10^k µm) close to ``fraction`` of a panel ``width_um``."""
    if not (width_um > 0 and math.isfinite(width_um)):
        raise ValueError(f"panel width must be positive, got {width_um} µm")
    target = width_um * fraction
    k = math.floor(math.log10(target))
    best = min((m * 10.0**e for e in (k - 1, k, k + 1) for m in NICE),
               key=lambda v: (v > width_um * 0.5, abs(math.log(v / target))))
    return float(f"{best:.6g}")


def label(length_um: float) -> str:
    """Text of a scale bar: nm below 1 µm, µm above, mm from 1000 µm."""
    if length_um < 1:
        return f"{length_um * 1e3:g} nm"
    if length_um >= 1000:
        return f"{length_um / 1e3:g} mm"
    return f"{length_um:g} µm"


def add_scalebar(ax, pixel_nm: float, width_px: int, color: str = "white",
                 length_um: float | None = None) -> float:
    """Draw a scale bar in the lower right of an image axes; return its length (µm).

    ``pixel_nm`` is the size of one displayed image pixel (nm), ``width_px`` the width of
    the displayed image (pixels); the axes must show the image in pixel coordinates
    (``imshow`` without ``extent``).
    """
    from matplotlib.patches import Rectangle

    width_um = width_px * pixel_nm / 1e3
    length_um = nice_length_um(width_um) if length_um is None else length_um
    bar_px = length_um * 1e3 / pixel_nm
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()  # imshow: y0 is the bottom edge (largest row)
    h_px = abs(y0 - y1)
    pad = 0.04 * width_px
    left = max(x0, x1) - pad - bar_px
    bottom = max(y0, y1) - pad
    thick = max(0.012 * h_px, 0.5)
    ax.add_patch(Rectangle((left, bottom - thick), bar_px, thick, facecolor=color,
                           edgecolor="black", linewidth=0.4))
    ax.text(left + bar_px / 2, bottom - thick - 0.01 * h_px, label(length_um), color=color,
            ha="center", va="bottom", fontsize=7,
            bbox={"facecolor": "black" if color == "white" else "white", "alpha": 0.35,
                  "pad": 0.6, "linewidth": 0})
    return length_um
