"""Figures of the report, each returned as a data URI (no file, no external resource).

Overviews are downsampled by the figure's resolution; zooms are drawn at the EM's full
resolution (the figure's dpi is raised until one EM pixel is at least one image pixel).
Every image panel carries a physical scale bar. Photographic figures are JPEG (a few
hundred kB per section instead of megabytes), plots PNG.
"""

from __future__ import annotations

import base64
import io as _io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..metrics import local_pcc_map, pcc
from ..scalebar import add_scalebar


@dataclass
class SectionView:
    """What the figures of one section need.

    ``truth`` is None for a section without measured FM (EM only): its figures show the
    prediction alone and no agreement metric.
    """

    name: str
    split: str
    em: np.ndarray  # work grid (H·s, W·s), z-scored
    truth: np.ndarray | None  # (C, H, W) registered measured FM, target grid
    pred: np.ndarray  # (C, H, W)
    unc: np.ndarray  # (C, H, W) spread of the test-time augmentations
    mask: np.ndarray  # (H, W) FM/EM overlap
    em_scale: int  # EM work pixels per target pixel
    pixel_nm: float  # target pixel size (nm)
    channels: list[str]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def text(s: object) -> str:
    """A user string safe for matplotlib (``$`` would start mathtext)."""
    return str(s).replace("$", r"\$")


def data_uri(fig, fmt: str = "png", dpi: float = 90, quality: int = 82) -> str:
    """Render a figure to a base64 data URI and close it."""
    plt = _plt()
    buf = _io.BytesIO()
    kwargs = {"pil_kwargs": {"quality": quality, "optimize": True}} if fmt == "jpeg" else {}
    fig.savefig(buf, format=fmt, dpi=dpi, **kwargs)
    plt.close(fig)
    mime = "image/jpeg" if fmt == "jpeg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _norm(a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    vals = a[mask] if mask is not None and mask.any() else a.ravel()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return np.zeros_like(a, dtype=float)
    lo, hi = np.percentile(vals, [1, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)


def _up(a: np.ndarray, s: int, shape: tuple[int, int]) -> np.ndarray:
    return np.kron(a, np.ones((s, s)))[: shape[0], : shape[1]]


def overlay_rgb(em: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, mask: np.ndarray,
                em_scale: int) -> np.ndarray:
    """EM in grey with measured FM in red and predicted FM in green (additive; yellow: both)."""
    p = _up(_norm(pred, mask), em_scale, em.shape)
    m = _up(mask.astype(float), em_scale, em.shape)
    t = _up(_norm(truth, mask), em_scale, em.shape) * m if truth is not None else 0 * p
    grey = 0.55 * _norm(em)
    rgb = np.stack([grey + 0.8 * t, grey + 0.8 * p * m, grey], axis=-1)
    return np.clip(rgb, 0, 1)


def zoom_regions(view: SectionView, c: int, size_px: int) -> list[tuple[str, int, int]]:
    """Zoom regions (label, row, col; top-left corner in target px) of channel ``c``.

    With measured FM: the window of best and of worst PCC among the windows with the most
    measured signal structure (upper quarter of local variance, so a flat, noisy
    background does not count as a failure), and the window of lowest confidence. Without: strongest
    predicted signal and lowest confidence. Chosen greedily, not overlapping where the grid
    leaves room.
    """
    from scipy import ndimage

    h, w = view.mask.shape
    size_px = max(4, min(size_px, h, w))
    m = view.mask
    cover = ndimage.uniform_filter(m.astype(float), size_px)
    u = ndimage.uniform_filter(np.where(m, view.unc[c], 0), size_px) / np.maximum(cover, 1e-9)
    scores: dict[str, np.ndarray] = {}
    if view.truth is not None:
        t = np.where(m, view.truth[c], 0)
        local = local_pcc_map(view.pred[c], view.truth[c], m, size_px, min_coverage=0.8)
        mean = ndimage.uniform_filter(t, size_px) / np.maximum(cover, 1e-9)
        var = ndimage.uniform_filter(t * t, size_px) / np.maximum(cover, 1e-9) - mean**2
        ok = np.isfinite(local) & (cover >= 0.8)
        structured = ok & (var >= np.percentile(var[ok], 75)) if ok.any() else ok
        scores["best local PCC"] = np.where(structured, local, -np.inf)
        scores["worst local PCC"] = np.where(structured, -local, -np.inf)
    else:
        p = np.where(m, view.pred[c], 0)
        scores["strongest predicted signal"] = ndimage.uniform_filter(p, size_px)
    scores["least confident"] = np.where(cover >= 0.8, u, -np.inf)
    half = size_px // 2
    fits = np.zeros((h, w), bool)
    fits[half: h - (size_px - half) + 1, half: w - (size_px - half) + 1] = True
    taken = np.zeros((h, w), bool)  # centres whose window would overlap a chosen one
    out = []
    for label, score in scores.items():
        valid = fits & np.isfinite(score)
        if (valid & ~taken).any():
            valid &= ~taken
        if not valid.any():
            valid = fits
        s = np.where(valid, np.nan_to_num(score.astype(np.float64), neginf=-1e300), -np.inf)
        r, col = np.unravel_index(int(np.argmax(s)), s.shape)
        taken[max(0, r - size_px + 1): r + size_px, max(0, col - size_px + 1): col + size_px] = True
        out.append((label, int(r) - half, int(col) - half))
    return out


def _image(ax, img, title: str, pixel_nm: float, bar: str = "white", **kw):
    im = ax.imshow(img, interpolation=kw.pop("interpolation", "antialiased"), **kw)
    ax.set_title(text(title), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    add_scalebar(ax, pixel_nm, img.shape[1], color=bar)
    return im


def _masked(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    return np.where(m, a, np.nan)


def section_overview(view: SectionView, regions: dict[int, list], zoom_px: int,
                     local_window_px: int, dpi: float = 80) -> str:
    """One row per channel: EM, measured FM, prediction, overlay, local PCC, low confidence.

    Downsampled (the figure's resolution); the zoom regions are boxed on the EM, the overlay
    and the local PCC map. JPEG data URI.
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    nc = len(view.channels)
    fig, axes = plt.subplots(nc, 6, figsize=(15, 2.75 * nc + 0.4), squeeze=False,
                             constrained_layout=True)
    m, s = view.mask, view.em_scale
    em_nm = view.pixel_nm / s
    cmap_nan = plt.get_cmap("coolwarm").with_extremes(bad="#bbbbbb")
    for c, ch in enumerate(view.channels):
        ax = axes[c]
        pred = view.pred[c]
        vals = pred[m] if view.truth is None else np.concatenate([pred[m], view.truth[c][m]])
        lo, hi = np.percentile(vals, [1, 99.5]) if vals.size else (0, 1)
        _image(ax[0], view.em, "EM", em_nm, cmap="gray", vmin=np.percentile(view.em, 1),
               vmax=np.percentile(view.em, 99.5))
        if view.truth is not None:
            _image(ax[1], _masked(view.truth[c], m), f"measured FM, {ch}", view.pixel_nm,
                   cmap="magma", vmin=lo, vmax=hi)
        else:
            ax[1].text(0.5, 0.5, "no FM measured\n(EM-only section)", ha="center",
                       va="center", transform=ax[1].transAxes)
            ax[1].set_axis_off()
        _image(ax[2], _masked(pred, m), f"predicted FM, {ch}", view.pixel_nm, cmap="magma",
               vmin=lo, vmax=hi)
        rgb = overlay_rgb(view.em, None if view.truth is None else view.truth[c], pred, m, s)
        _image(ax[3], rgb, "measured (red) / predicted (green) on EM", em_nm)
        if view.truth is not None:
            local = local_pcc_map(pred, view.truth[c], m, local_window_px)
            title = f"local PCC ({local_window_px * view.pixel_nm / 1e3:.1f} µm windows)"
            im = _image(ax[4], local, title, view.pixel_nm, bar="black", cmap=cmap_nan,
                        vmin=-1, vmax=1, interpolation="nearest")
            fig.colorbar(im, ax=ax[4], shrink=0.75, ticks=[-1, 0, 1])
        else:
            ax[4].text(0.5, 0.5, "no local PCC\n(no measured FM)", ha="center", va="center",
                       transform=ax[4].transAxes)
            ax[4].set_axis_off()
        im = _image(ax[5], _masked(view.unc[c], m), "low confidence: TTA spread (ADU)",
                    view.pixel_nm, cmap="viridis")
        fig.colorbar(im, ax=ax[5], shrink=0.75)
        for k, (_, r, col) in enumerate(regions[c]):
            tag = "EFGH"[k] if k < 4 else str(k)
            for a, scale in ((ax[0], s), (ax[3], s), (ax[4], 1)):
                if not a.axison:
                    continue
                a.add_patch(Rectangle((col * scale - 0.5, r * scale - 0.5), zoom_px * scale,
                                      zoom_px * scale, fill=False, edgecolor="white", lw=1.1))
                a.text(col * scale, r * scale - 2 * scale, f"{tag}{c + 1}", color="white",
                       fontsize=7, va="bottom")
    fig.suptitle(text(f"{view.name} ({view.split})"), fontsize=11)
    return data_uri(fig, "jpeg", dpi=dpi)


def section_zooms(view: SectionView, regions: dict[int, list], zoom_px: int
                  ) -> tuple[str, list[dict]]:
    """One row per zoom region: EM, measured, predicted, overlay, at the EM's full resolution.

    Returns the JPEG data URI and, per zoom, its tag, channel, label and PCC inside the box.
    """
    plt = _plt()
    rows = [(c, k, reg) for c in range(len(view.channels)) for k, reg in enumerate(regions[c])]
    s = view.em_scale
    em_nm = view.pixel_nm / s
    panel_in = 1.9
    crop_px = zoom_px * s
    dpi = max(80, math.ceil(crop_px / (panel_in * 0.9)))  # ≥ 1 image px per EM px
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * panel_in, panel_in * 1.08 * len(rows)),
                             squeeze=False, constrained_layout=True)
    info = []
    m = view.mask
    for i, (c, k, (label, r, col)) in enumerate(rows):
        ax = axes[i]
        tag = f"{'EFGH'[k] if k < 4 else k}{c + 1}"
        ch = view.channels[c]
        sl = (slice(r, r + zoom_px), slice(col, col + zoom_px))
        esl = (slice(r * s, (r + zoom_px) * s), slice(col * s, (col + zoom_px) * s))
        em = view.em[esl]
        pred = view.pred[c][sl]
        mm = m[sl]
        truth = None if view.truth is None else view.truth[c][sl]
        box_pcc = pcc(pred[mm], truth[mm]) if truth is not None and mm.any() else float("nan")
        info.append({"tag": tag, "channel": ch, "region": label, "pcc": box_pcc})
        vals = pred[mm] if truth is None else np.concatenate([pred[mm], truth[mm]])
        lo, hi = np.percentile(vals, [1, 99.5]) if vals.size else (0, 1)
        _image(ax[0], em, f"{tag} {label}", em_nm, cmap="gray", interpolation="nearest",
               vmin=np.percentile(view.em, 1), vmax=np.percentile(view.em, 99.5))
        if truth is not None:
            _image(ax[1], _masked(truth, mm), f"measured {ch}", view.pixel_nm, cmap="magma",
                   vmin=lo, vmax=hi, interpolation="nearest")
        else:
            ax[1].set_axis_off()
        _image(ax[2], _masked(pred, mm), f"predicted {ch}", view.pixel_nm, cmap="magma",
               vmin=lo, vmax=hi, interpolation="nearest")
        rgb = overlay_rgb(view.em, view.truth[c] if truth is not None else None, view.pred[c],
                          m, s)[esl]
        title = f"overlay, PCC {box_pcc:.2f}" if np.isfinite(box_pcc) else "overlay"
        _image(ax[3], rgb, title, em_nm, interpolation="nearest")
    return data_uri(fig, "jpeg", dpi=dpi), info


def histogram_figure(views: list[SectionView], channels: list[str]) -> str | None:
    """Per channel, the 2-D histogram of predicted vs measured FM over the given sections."""
    views = [v for v in views if v.truth is not None]
    if not views:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(channels), figsize=(4.2 * len(channels), 3.8),
                             squeeze=False, constrained_layout=True)
    for c, ch in enumerate(channels):
        ax = axes[0][c]
        idx = [v.channels.index(ch) for v in views]
        t = np.concatenate([v.truth[i][v.mask] for v, i in zip(views, idx, strict=True)])
        p = np.concatenate([v.pred[i][v.mask] for v, i in zip(views, idx, strict=True)])
        lo, hi = np.percentile(np.concatenate([t, p]), [0.1, 99.9])
        ax.hist2d(t, p, bins=80, range=[[lo, hi], [lo, hi]], cmap="Greys", norm="log")
        ax.plot([lo, hi], [lo, hi], color="tab:red", lw=0.8, label="identity")
        ax.set_xlabel("measured FM (ADU)")
        ax.set_ylabel("predicted FM (ADU)")
        ax.set_title(text(f"{ch}: PCC {pcc(p, t):.3f}, {t.size} px"), fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    return data_uri(fig, "png", dpi=80)


def thumbnails_figure(views: list[SectionView], scores: dict[tuple[str, str], float]) -> str:
    """Every section and channel as a small overlay (measured red / predicted green on EM)."""
    plt = _plt()
    nc = max(len(v.channels) for v in views)
    # at most 6 columns of 1.9 in until the sheet is square; then more, smaller thumbnails,
    # so that the sheet's area (and its bytes) stops growing with the number of sections
    cols = min(len(views), max(6, math.ceil(math.sqrt(len(views) * nc))))
    rows = math.ceil(len(views) / cols) * nc
    size = min(1.9, 11.4 / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, 1.08 * size * rows),
                             squeeze=False, constrained_layout=True)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, v in enumerate(views):
        for c, ch in enumerate(v.channels):
            ax = axes[(i // cols) * nc + c][i % cols]
            ax.set_axis_on()
            rgb = overlay_rgb(v.em, None if v.truth is None else v.truth[c], v.pred[c], v.mask,
                              v.em_scale)
            score = scores.get((v.name, ch), float("nan"))
            sc = f"PCC {score:.2f}" if np.isfinite(score) else "no PCC"
            _image(ax, rgb, f"{v.name} ({v.split})\n{ch}: {sc}", v.pixel_nm / v.em_scale)
            ax.title.set_fontsize(7 if cols <= 6 else max(3, 7 * 6 / cols))
    return data_uri(fig, "jpeg", dpi=60, quality=78)


def training_figure(tsv) -> str:
    """Training loss and validation PCC per step."""
    from pathlib import Path

    plt = _plt()
    lines = Path(tsv).read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"), strict=True)) for ln in lines[1:]]
    step = np.array([float(r["step"]) for r in rows])
    loss = np.array([float(r["train_loss"]) for r in rows])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.4), constrained_layout=True)
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    a.plot(step, loss, color="#bbb", lw=0.6, label="per step")
    a.plot(step[k - 1:], smooth, color="k", lw=1.2, label=f"mean of {k}")
    val = [(float(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss")]
    if val:
        a.plot(*zip(*val, strict=True), "o-", color="tab:blue", label="validation")
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("MSE (normalised)")
    a.legend(fontsize=8)
    for col in (h for h in header if h.startswith("val_pcc_")):
        pts = [(float(r["step"]), float(r[col])) for r in rows if r.get(col)]
        if pts:
            b.plot(*zip(*pts, strict=True), "o-", label=text(col.removeprefix("val_pcc_")))
    b.set_xlabel("step")
    b.set_ylabel("validation PCC")
    if b.get_legend_handles_labels()[0]:
        b.legend(fontsize=8)
    return data_uri(fig, "png", dpi=75)


def downsampled(png_path, max_width_px: int = 700) -> str:
    """An existing PNG (registration QC) re-encoded as a JPEG at most ``max_width_px`` wide."""
    import matplotlib.image as mpimg

    plt = _plt()
    img = mpimg.imread(str(png_path))
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    img = img[..., :3] if img.ndim == 3 else img
    h, w = img.shape[:2]
    k = max(1, math.ceil(w / max_width_px))
    if k > 1:  # block average: a true downsampling, no aliasing
        hh, ww = h // k * k, w // k * k
        img = img[:hh, :ww].reshape(hh // k, k, ww // k, k, -1).mean(axis=(1, 3))
        img = img.astype(np.uint8).squeeze()
    h, w = img.shape[:2]
    fig = plt.figure(figsize=(w / 100, h / 100))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    ax.set_axis_off()
    return data_uri(fig, "jpeg", dpi=100)


def contact_sheet(pngs: dict[str, str | Path], width_px: int = 1100) -> str:
    """Existing PNGs (registration QC) side by side in one JPEG ``width_px`` wide.

    The sheet is about as tall as wide whatever the number of images (each one smaller as
    there are more), so its size does not grow with the number of sections.
    """
    import matplotlib.image as mpimg

    plt = _plt()
    names = list(pngs)
    first = mpimg.imread(str(pngs[names[0]]))
    aspect = first.shape[1] / first.shape[0]  # width / height of one QC figure
    cols = max(1, min(len(names), math.ceil(math.sqrt(len(names) * aspect))))
    rows = math.ceil(len(names) / cols)
    w = width_px / 100 / cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, (w / aspect + 0.18) * rows),
                             squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, name in enumerate(names):
        img = mpimg.imread(str(pngs[name]))
        k = max(1, img.shape[1] // max(1, int(w * 100)))
        ax = axes[i // cols][i % cols]
        ax.imshow(img[::k, ::k], interpolation="antialiased")
        ax.set_title(text(name), fontsize=max(4, min(8, 60 / cols)))
    fig.subplots_adjust(0, 0, 1, 1, 0.02, 0.25)
    return data_uri(fig, "jpeg", dpi=100)
