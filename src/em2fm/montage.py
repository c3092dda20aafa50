"""Montages: SEM tiles placed by stage position, refined on their overlaps, read lazily.

Integrated array tomography images a section as a grid of high-magnification SEM
tiles (Odemis ``EM-grid/tile-*.ome.tiff``), each with its stage position. Stitching:

1. **nominal placement**: each tile's top-left corner in mosaic px from its stage
   centre (:func:`nominal_positions`; X right, stage Y up = rows down);
2. **seams**: for every pair of tiles whose nominal footprints overlap by at least
   ``min_overlap_px``, the shared strip is cut from both and their offset measured by
   phase correlation (Hann window, sub-pixel parabolic peak) with the normalised
   cross-correlation after alignment as its confidence (:func:`measure_seam`);
3. **global consistency**: positions solved by weighted least squares over all seams
   (each seam says ``p_j - p_i = measured``; seams below ``min_ncc`` are left out), with a
   weak pull to the nominal positions that fixes the gauge and keeps a tile without a
   trusted seam at its stage position (:func:`stitch`). A seam that disagrees with the
   solution by more than ``max_residual_px`` is a false match: the worst is dropped and
   the system solved again. The residual of every seam (px) tells how consistent the
   result is.

:class:`Mosaic` is the stitched section as a lazy image: ``read(r0, r1, c0, c1)``
reads only the tiles a region touches (through their own lazy readers), each pixel
from the tile whose centre is nearest, placed at whole pixels (the sub-pixel part,
≤ 0.5 px, is reported, not resampled). It offers the ``shape``/``read`` interface of
:class:`em2fm.lazy.RawRegionReader`, so :class:`em2fm.lazy.PreparedEM` and the
windowed prediction use it unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .odemis import ExportError, OdemisImage


class RegionReader(Protocol):
    """A 2-D image read region by region."""

    shape: tuple[int, int]

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``image[r0:r1, c0:c1]`` (inside the image)."""
        ...


@dataclass
class ArrayReader:
    """An in-memory array as a :class:`RegionReader`."""

    array: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) in px."""
        return self.array.shape[0], self.array.shape[1]

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``array[r0:r1, c0:c1]``."""
        return self.array[r0:r1, c0:c1]


@dataclass
class Seam:
    """One measured overlap between tiles ``i`` and ``j`` (px, (row, col)).

    Attributes:
        nominal: ``p_j - p_i`` from the stage positions.
        measured: ``p_j - p_i`` from phase correlation of the overlap.
        ncc: normalised cross-correlation of the aligned overlap (confidence).
        used: whether the seam entered the least squares (ncc ≥ min_ncc).
        residual_px: ``|p_j - p_i - measured|`` after the global solution.
    """

    i: int
    j: int
    nominal: tuple[float, float]
    measured: tuple[float, float]
    ncc: float
    used: bool = True
    residual_px: float = math.nan

    def as_dict(self, names: list[str]) -> dict:
        """JSON-ready summary (tile names, shifts and residual in px)."""
        return {"tiles": [names[self.i], names[self.j]],
                "correction_px": [self.measured[0] - self.nominal[0],
                                  self.measured[1] - self.nominal[1]],
                "ncc": self.ncc, "used": self.used, "residual_px": self.residual_px}


def nominal_positions(centres_m: list[tuple[float, float]], pixel_size_m: float,
                      shapes: list[tuple[int, int]]) -> np.ndarray:
    """Top-left corners (row, col) in mosaic px of tiles from their stage centres (m).

    Pixel (row, col) of a tile with centre ``(x, y)`` lies at stage
    ``x + (col - (w-1)/2)·px``, ``y - (row - (h-1)/2)·px`` (Odemis convention, rotation 0).
    The mosaic origin is the top-left corner of the tile bounding box.
    """
    rows, cols = [], []
    for (x, y), (h, w) in zip(centres_m, shapes, strict=True):
        cols.append(x / pixel_size_m - (w - 1) / 2)
        rows.append(-y / pixel_size_m - (h - 1) / 2)
    pos = np.stack([rows, cols], axis=1)
    return pos - pos.min(axis=0)


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)


def _parabolic(c: np.ndarray, k: int) -> float:
    """Sub-pixel offset of a peak at index ``k`` of a 1-D (circular) profile."""
    a, b, d = c[(k - 1) % len(c)], c[k], c[(k + 1) % len(c)]
    den = a - 2 * b + d
    return 0.0 if den == 0 else float(0.5 * (a - d) / den)


def phase_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Shift (rows, cols) ``s`` with ``b(x) ≈ a(x - s)``, sub-pixel; |s| < half the size.

    The integer peak of the phase correlation (robust to uneven contrast), refined by a
    parabola through the cross-correlation around it.
    """
    win = _hann(a.shape[0])[:, None] * _hann(a.shape[1])[None, :]
    fa = np.fft.fft2((a - a.mean()) * win)
    fb = np.fft.fft2((b - b.mean()) * win)
    cross = fb * np.conj(fa)
    phase = np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-12)).real
    k = np.unravel_index(int(np.argmax(phase)), phase.shape)  # integer peak: phase (sharp)
    corr = np.fft.ifft2(cross).real  # sub-pixel: the smooth cross-correlation around it
    shift = []
    for axis in (0, 1):
        n = corr.shape[axis]
        profile = corr[:, k[1]] if axis == 0 else corr[k[0], :]
        s = k[axis] + _parabolic(profile, int(k[axis]))
        shift.append(s - n if s > n / 2 else s)
    return float(shift[0]), float(shift[1])


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def measure_seam(tile_i: RegionReader, tile_j: RegionReader, p_i: np.ndarray,
                 p_j: np.ndarray, min_overlap_px: int = 8) -> Seam | None:
    """Measure ``p_j - p_i`` on the nominal overlap of two tiles (None: no overlap)."""
    hi, wi = tile_i.shape
    hj, wj = tile_j.shape
    d = np.round(p_j - p_i).astype(int)  # nominal offset of j in i's pixels
    r0, r1 = max(0, d[0]), min(hi, d[0] + hj)
    c0, c1 = max(0, d[1]), min(wi, d[1] + wj)
    if r1 - r0 < min_overlap_px or c1 - c0 < min_overlap_px:
        return None
    a = tile_i.read(r0, r1, c0, c1).astype(np.float64)
    b = tile_j.read(r0 - d[0], r1 - d[0], c0 - d[1], c1 - d[1]).astype(np.float64)
    # b(x) ≈ a(x - s)  ⇒  tile j's true offset is d - s
    s = phase_correlation(a, b)
    measured = (float(d[0] - s[0]), float(d[1] - s[1]))
    si, sj = round(s[0]), round(s[1])
    ha, wa = a.shape
    ncc = _ncc(a[max(0, -si): ha - max(0, si), max(0, -sj): wa - max(0, sj)],
               b[max(0, si): ha - max(0, -si), max(0, sj): wa - max(0, -sj)]) \
        if abs(si) < ha - 4 and abs(sj) < wa - 4 else 0.0
    nominal = (float(p_j[0] - p_i[0]), float(p_j[1] - p_i[1]))
    return Seam(0, 0, nominal, measured, ncc)


@dataclass
class StitchResult:
    """Refined tile positions (row, col top-left, mosaic px) and the seams behind them."""

    positions: np.ndarray
    nominal: np.ndarray
    seams: list[Seam] = field(default_factory=list)

    def summary(self, names: list[str]) -> dict:
        """JSON-ready: per seam its correction and residual; the worst residual (px)."""
        used = [s.residual_px for s in self.seams if s.used]
        return {
            "n_tiles": len(self.positions), "n_seams": len(self.seams),
            "n_seams_used": len(used),
            "max_residual_px": float(max(used)) if used else None,
            "rms_residual_px": float(np.sqrt(np.mean(np.square(used)))) if used else None,
            "correction_from_stage_px": [[float(v) for v in p - n] for p, n in
                                         zip(self.positions, self.nominal, strict=True)],
            "seams": [s.as_dict(names) for s in self.seams],
        }


def stitch(tiles: list[RegionReader], nominal: np.ndarray, min_overlap_px: int = 8,
           min_ncc: float = 0.3, prior_weight: float = 1e-3,
           max_residual_px: float = 2.0) -> StitchResult:
    """Refine tile positions by their overlaps, globally consistent (least squares).

    Args:
        tiles: the tiles (lazy readers).
        nominal: (N, 2) top-left corners (row, col) from the stage positions, mosaic px.
        min_overlap_px: least overlap (px, both directions) for a seam to be measured.
        min_ncc: least aligned correlation for a seam to be used.
        prior_weight: weight of the pull towards the nominal positions (a seam has 1).
        max_residual_px: a seam disagreeing more with the solution is a false match: the
            worst is left out and the positions solved again, until all agree.
    """
    n = len(tiles)
    nominal = np.asarray(nominal, np.float64)
    seams = []
    for i in range(n):
        for j in range(i + 1, n):
            seam = measure_seam(tiles[i], tiles[j], nominal[i], nominal[j], min_overlap_px)
            if seam is not None:
                seam.i, seam.j = i, j
                seam.used = seam.ncc >= min_ncc
                seams.append(seam)
    while True:
        positions = _solve(seams, nominal, prior_weight)
        for s in seams:
            s.residual_px = float(np.hypot(*(positions[s.j] - positions[s.i]
                                              - np.array(s.measured))))
        used = [s for s in seams if s.used]
        worst = max(used, key=lambda s: s.residual_px, default=None)
        if worst is None or worst.residual_px <= max_residual_px:
            break
        worst.used = False  # an outlier (a false match): leave it out and solve again
    positions -= positions.min(axis=0)
    return StitchResult(positions=positions, nominal=nominal - nominal.min(axis=0), seams=seams)


def _solve(seams: list[Seam], nominal: np.ndarray, prior_weight: float) -> np.ndarray:
    """Least squares over the used seams plus the weak pull to the nominal positions."""
    n = len(nominal)
    used = [s for s in seams if s.used]
    a = np.zeros((len(used) + n, n))
    b = np.zeros((len(used) + n, 2))
    for k, s in enumerate(used):
        a[k, s.i], a[k, s.j] = -1.0, 1.0
        b[k] = s.measured
    w = math.sqrt(prior_weight)
    a[len(used):] = w * np.eye(n)
    b[len(used):] = w * nominal
    positions, *_ = np.linalg.lstsq(a, b, rcond=None)
    return positions


class Mosaic:
    """The stitched tiles as one lazy image (float32, NaN where no tile covers)."""

    def __init__(self, tiles: list[RegionReader], positions: np.ndarray) -> None:
        self.tiles = tiles
        self.origins = np.round(np.asarray(positions)).astype(int)
        self.origins -= self.origins.min(axis=0)
        ends = [o + np.array(t.shape) for o, t in zip(self.origins, tiles, strict=True)]
        self.shape = tuple(int(v) for v in np.max(ends, axis=0))
        self.centres = np.array([o + (np.array(t.shape) - 1) / 2
                                 for o, t in zip(self.origins, tiles, strict=True)])

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Mosaic px ``[r0:r1, c0:c1]``: each pixel from the tile whose centre is nearest."""
        out = np.full((r1 - r0, c1 - c0), np.nan, np.float32)
        best = np.full(out.shape, np.inf)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        for k, (tile, o) in enumerate(zip(self.tiles, self.origins, strict=True)):
            h, w = tile.shape
            a, b = max(r0, o[0]), min(r1, o[0] + h)
            c, d = max(c0, o[1]), min(c1, o[1] + w)
            if a >= b or c >= d:
                continue
            sub = (slice(a - r0, b - r0), slice(c - c0, d - c0))
            dist = (rr[sub] - self.centres[k, 0]) ** 2 + (cc[sub] - self.centres[k, 1]) ** 2
            take = dist < best[sub]
            if not take.any():
                continue
            pixels = tile.read(a - o[0], b - o[0], c - o[1], d - o[1]).astype(np.float32)
            out[sub][take] = pixels[take]
            best[sub][take] = dist[take]
        return out


def doubts(summary: dict, max_residual_px: float = 1.0) -> list[str]:
    """Warnings about a stitching summary: left-out seams, large residuals, holes."""
    out = []
    dropped = [s for s in summary["seams"] if not s["used"]]
    if dropped:
        out.append(f"montage: {len(dropped)} of {summary['n_seams']} tile overlaps not used "
                   "(low correlation or inconsistent): "
                   + ", ".join("/".join(s["tiles"]) for s in dropped))
    if summary["max_residual_px"] is not None and summary["max_residual_px"] > max_residual_px:
        out.append(f"montage: stitching residual up to {summary['max_residual_px']:.2f} SEM px")
    if summary.get("uncovered_fraction", 0) > 0:
        out.append(f"montage: {100 * summary['uncovered_fraction']:.2f}% of the mosaic's "
                   "bounding box is covered by no tile (filled with the mean)")
    return out


# -- Odemis EM-grid montages ----------------------------------------------------------------
EM_GRID_FOLDER = "EM-grid"


def is_grid_tile(image: OdemisImage) -> bool:
    """True for an SEM image from an array-tomography ``EM-grid/`` folder (a montage tile)."""
    return EM_GRID_FOLDER in Path(image.source).parts


def covered_fraction(shape: tuple[int, int], origins: np.ndarray,
                     shapes: list[tuple[int, int]]) -> float:
    """Fraction of a ``shape`` mosaic covered by tile rectangles (exact, without pixels)."""
    rows = np.unique([0, shape[0], *[o[0] for o in origins],
                      *[o[0] + s[0] for o, s in zip(origins, shapes, strict=True)]])
    cols = np.unique([0, shape[1], *[o[1] for o in origins],
                      *[o[1] + s[1] for o, s in zip(origins, shapes, strict=True)]])
    cover = np.zeros((len(rows) - 1, len(cols) - 1), bool)
    for o, (h, w) in zip(origins, shapes, strict=True):
        a, b = np.searchsorted(rows, [o[0], o[0] + h])
        c, d = np.searchsorted(cols, [o[1], o[1] + w])
        cover[a:b, c:d] = True
    area = np.diff(rows)[:, None] * np.diff(cols)[None, :]
    return float((area * cover).sum() / (shape[0] * shape[1]))


class FilledMosaic:
    """A :class:`Mosaic` as the section's SEM image: holes filled, in the tiles' dtype.

    ``fill`` (the mean of the covered pixels) replaces pixels no tile covers; integer
    types are rounded and clipped, as one whole-image conversion would.
    """

    def __init__(self, mosaic: Mosaic, dtype: np.dtype | str, fill: float) -> None:
        self.mosaic = mosaic
        self.shape = mosaic.shape
        self.dtype = np.dtype(dtype)
        self.fill = fill

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Mosaic px ``[r0:r1, c0:c1]`` in the tiles' dtype."""
        data = self.mosaic.read(r0, r1, c0, c1)
        holes = ~np.isfinite(data)
        if holes.any():
            data[holes] = self.fill
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            data = np.clip(np.round(data), info.min, info.max)
        return data.astype(self.dtype)


def covered_mean(mosaic: Mosaic, band_px: int = 1 << 22) -> float:
    """Mean of the mosaic's covered pixels, streamed block by block (float64 sums)."""
    h, w = mosaic.shape
    cols = min(w, 4096)
    rows = max(1, band_px // cols)
    total, n = 0.0, 0
    for r0 in range(0, h, rows):
        for c0 in range(0, w, cols):
            block = mosaic.read(r0, min(h, r0 + rows), c0, min(w, c0 + cols))
            ok = np.isfinite(block)
            total += float(block[ok].sum(dtype=np.float64))
            n += int(ok.sum())
    return total / max(n, 1)


def assemble(tiles: list[OdemisImage], min_ncc: float = 0.3, max_residual_px: float = 2.0
             ) -> tuple[OdemisImage, dict, FilledMosaic]:
    """Stitch the ``EM-grid`` tiles of a section into one lazy SEM image and its summary.

    The tiles are read region by region from their files (:func:`em2fm.lazy.open_plane`):
    seams from their overlaps only, the mosaic by :meth:`FilledMosaic.read`; the returned
    image has no ``data``. The mosaic is placed on the stage by the tiles' recorded
    positions on average: its origin is the mean over tiles of (recorded position −
    refined position), so stage errors of single tiles cancel out and no tile is
    privileged.

    Raises:
        ExportError: tiles differ in pixel size or rotation, or lack pixels/placement.
    """
    from .lazy import open_plane

    ref = tiles[0]
    for t in tiles:
        if not t.ifds or t.pixel_size_m is None or t.centre_m is None:
            raise ExportError(t.source, "montage tile without pixels, pixel size or stage "
                              "position", "re-export the EM-grid tiles from Odemis")
        if (not np.allclose(t.pixel_size_m, ref.pixel_size_m, rtol=1e-6)
                or abs(t.rotation_rad - ref.rotation_rad) > 1e-9):
            raise ExportError(t.source, f"montage tile pixel size {t.pixel_size_m} m or "
                              f"rotation {t.rotation_rad} rad differs from {ref.source}'s",
                              "put only the tiles of one SEM montage in EM-grid/")
    if abs(ref.rotation_rad) > 1e-9:
        raise ExportError(ref.source, "rotated SEM montages are not supported yet",
                          "export the tiles with the SEM scan rotation at 0")
    assert ref.pixel_size_m is not None
    px = float(ref.pixel_size_m[0])
    readers: list[RegionReader] = []
    for t in tiles:
        try:
            readers.append(ArrayReader(t.data[0]) if t.data is not None else open_plane(t, 0))
        except ValueError as exc:
            raise ExportError(t.source, str(exc).split(": ", 1)[-1],
                              "re-export the EM-grid tiles from Odemis") from exc
    shapes = [r.shape for r in readers]
    centres = [t.centre_m for t in tiles]
    nominal = nominal_positions(centres, px, shapes)  # type: ignore[arg-type]
    result = stitch(readers, nominal, min_ncc=min_ncc, max_residual_px=max_residual_px)
    mosaic = Mosaic(readers, result.positions)
    uncovered = 1.0 - covered_fraction(mosaic.shape, mosaic.origins, shapes)
    fill = covered_mean(mosaic) if uncovered > 0 else 0.0
    # stage x of mosaic column 0, y of row 0 (pixel centres), averaged over tiles
    xs, ys = [], []
    for (cx, cy), o, (h, w) in zip(centres, mosaic.origins, shapes, strict=True):
        xs.append(cx - (o[1] + (w - 1) / 2) * px)
        ys.append(cy + (o[0] + (h - 1) / 2) * px)
    x0, y0 = float(np.mean(xs)), float(np.mean(ys))
    hm, wm = mosaic.shape
    centre = (x0 + (wm - 1) / 2 * px, y0 - (hm - 1) / 2 * px)
    names = [Path(t.source).name for t in tiles]
    summary = result.summary(names)
    summary.update(uncovered_fraction=uncovered, shape=[hm, wm], pixel_size_m=px)
    image = OdemisImage(**{**ref.__dict__, "name": f"SEM montage ({len(tiles)} tiles)",
                           "data": None, "shape_cyx": (1, hm, wm), "centre_m": centre,
                           "source": str(Path(ref.source).parent)})
    return image, summary, FilledMosaic(mosaic, ref.dtype, fill)
