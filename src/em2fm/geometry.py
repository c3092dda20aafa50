"""Pixel and stage coordinates, following the Odemis conventions.

Conventions used everywhere in the workflow:

- **Stage frame**: metres, X to the right, **Y up** (Odemis ``MD_POS``).
- **Pixel coordinates**: ``(x, y) = (column, row)`` in pixels, row index growing
  downwards, **pixel centres at integers**: pixel ``[row, col]`` covers
  ``col - 0.5 … col + 0.5``.
- **Odemis image metadata**: ``centre_m`` is the stage position of the image
  centre, ``pixel_size_m`` the pixel pitch (m) in x and y, ``rotation_rad`` a
  counter-clockwise rotation about the centre and ``shear`` a vertical shear.

Odemis (``doc/develop/dataio.rst``) maps a continuous pixel coordinate ``p`` of an
image of size ``(sx, sy)`` with ``pc = [p_x - sx/2, -(p_y - sy/2)]`` and
``P = R · S · L · pc + T``, where a pixel with index ``i`` spans ``[i, i + 1)``
(its bounding-box code puts the image edges at ``T ± size · pixel / 2``). The
centre of pixel index ``i`` is therefore ``i + 0.5`` in that coordinate, which
is what :meth:`ImageGeometry.pixel_to_stage` encodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ImageGeometry:
    """Where a 2-D image lies on the stage.

    Attributes:
        shape_yx: image size in pixels, ``(rows, columns)``.
        pixel_size_m: pixel pitch ``(x, y)`` in metres.
        centre_m: stage position ``(x, y)`` of the image centre in metres.
        rotation_rad: counter-clockwise rotation in radians.
        shear: vertical shear (dimensionless), as Odemis stores it.
    """

    shape_yx: tuple[int, int]
    pixel_size_m: tuple[float, float]
    centre_m: tuple[float, float]
    rotation_rad: float = 0.0
    shear: float = 0.0

    def pixel_to_stage(self) -> np.ndarray:
        """3×3 affine matrix mapping ``(col, row, 1)`` in px to stage ``(x, y, 1)`` in m."""
        sy, sx = self.shape_yx
        c, s = math.cos(self.rotation_rad), math.sin(self.rotation_rad)
        rot = np.array([[c, -s], [s, c]])
        scale = np.diag([float(self.pixel_size_m[0]), float(self.pixel_size_m[1])])
        shear = np.array([[1.0, 0.0], [-float(self.shear), 1.0]])
        flip = np.diag([1.0, -1.0])  # rows grow downwards, stage Y grows upwards
        linear = rot @ scale @ shear @ flip
        centre_px = np.array([sx / 2.0 - 0.5, sy / 2.0 - 0.5])
        out = np.eye(3)
        out[:2, :2] = linear
        out[:2, 2] = np.asarray(self.centre_m, dtype=float) - linear @ centre_px
        return out

    def stage_to_pixel(self) -> np.ndarray:
        """3×3 affine matrix mapping stage ``(x, y, 1)`` in m to ``(col, row, 1)`` in px."""
        return np.linalg.inv(self.pixel_to_stage())

    @property
    def field_m(self) -> tuple[float, float]:
        """Field of view ``(width, height)`` in metres."""
        return (
            self.shape_yx[1] * float(self.pixel_size_m[0]),
            self.shape_yx[0] * float(self.pixel_size_m[1]),
        )


def moving_to_fixed_px(moving: ImageGeometry, fixed: ImageGeometry) -> np.ndarray:
    """3×3 affine mapping pixel coordinates of ``moving`` to those of ``fixed``.

    Both images are placed by their stage metadata; for an FM image (moving)
    and an EM image (fixed) this is the coarse ``fm_to_em_px`` transform.
    """
    return fixed.stage_to_pixel() @ moving.pixel_to_stage()


def apply_affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 3×3 affine ``matrix`` to points ``xy`` of shape ``(..., 2)``."""
    xy = np.asarray(xy, dtype=float)
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def rms_displacement(
    a: np.ndarray, b: np.ndarray, points_xy: np.ndarray
) -> float:
    """Root-mean-square distance between ``a(p)`` and ``b(p)`` over ``points_xy``.

    Units are those of the affines' output space (e.g. EM px).
    """
    d = apply_affine(a, points_xy) - apply_affine(b, points_xy)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=-1))))


def em_field_fm_pixels(fm_shape_yx: tuple[int, int], fm_to_em_px: np.ndarray,
                       em_shape_yx: tuple[int, int]) -> np.ndarray:
    """FM pixel centres ``(x, y)`` (FM px) that ``fm_to_em_px`` maps inside the EM field."""
    pts = grid_points(fm_shape_yx)
    em = apply_affine(fm_to_em_px, pts)
    inside = ((em[:, 0] >= -0.5) & (em[:, 0] <= em_shape_yx[1] - 0.5)
              & (em[:, 1] >= -0.5) & (em[:, 1] <= em_shape_yx[0] - 0.5))
    return pts[inside]


def grid_points(shape_yx: tuple[int, int], step: int = 1) -> np.ndarray:
    """Pixel-centre coordinates ``(x, y)`` of a regular grid, shape ``(N, 2)``."""
    rows = np.arange(0, shape_yx[0], step, dtype=float)
    cols = np.arange(0, shape_yx[1], step, dtype=float)
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=-1)


def scale_matrix(factor: float) -> np.ndarray:
    """Affine from a grid ``factor`` times coarser to its parent grid (pixel centres).

    Coarse pixel ``i`` covers parent pixels ``[i·f, (i+1)·f)``; its centre lies at
    parent coordinate ``(i + 0.5)·f - 0.5``.
    """
    off = 0.5 * factor - 0.5
    return np.array([[factor, 0.0, off], [0.0, factor, off], [0.0, 0.0, 1.0]])


def warp(
    image: np.ndarray,
    src_to_dst_px: np.ndarray,
    out_shape_yx: tuple[int, int],
    order: int = 1,
) -> np.ndarray:
    """Resample ``image`` ((Y, X) or (C, Y, X)) onto a destination pixel grid.

    Args:
        image: source pixels.
        src_to_dst_px: 3×3 affine from source to destination pixel coordinates.
        out_shape_yx: destination shape (rows, columns).
        order: spline order (1 bilinear, 3 cubic).

    Returns:
        float32 array, NaN where the destination pixel centre falls outside the source.

    The destination is computed in bands of :data:`WARP_BAND_PX` pixels, so that the
    float64 coordinate grids never exist for the whole destination at once.
    """
    inv = np.linalg.inv(src_to_dst_px)
    chans = image if image.ndim == 3 else image[None]
    sy, sx = chans.shape[-2:]
    h, w = out_shape_yx
    out = np.empty((chans.shape[0], h, w), dtype=np.float32)
    band = max(1, WARP_BAND_PX // max(w, 1))
    as_f32 = chans.dtype == np.float32
    for c, ch in enumerate(chans):
        ch32 = ch if as_f32 else ch.astype(np.float32)
        if order > 1:  # the spline coefficients once per channel, as map_coordinates does
            pad = 12
            coeffs = ndimage.spline_filter(np.pad(ch32, pad, mode="edge"), order,
                                           output=np.float64, mode="nearest")
        else:
            pad, coeffs = 0, ch32
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            rows, cols = np.mgrid[r0:r1, 0:w].astype(np.float64)
            src = apply_affine(inv, np.stack([cols, rows], axis=-1))
            coords = np.stack([src[..., 1], src[..., 0]])
            outside = ((coords[0] < -0.5) | (coords[0] > sy - 0.5)
                       | (coords[1] < -0.5) | (coords[1] > sx - 0.5))
            block = ndimage.map_coordinates(coeffs, coords + pad, order=order,
                                            mode="nearest", prefilter=False)
            block[outside] = np.nan
            out[c, r0:r1] = block
    return out if image.ndim == 3 else out[0]


WARP_BAND_PX = 1 << 20  # destination px per band of :func:`warp`


def smooth_resample(
    image: np.ndarray, factor: float, sigma_px: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth and resample ``image`` to a grid ``factor`` times coarser.

    Output pixel ``(i, j)`` covers input pixels ``[i·f, (i+1)·f)``, its centre
    at input coordinate ``(i + 0.5)·f - 0.5``. Returns the image and the 3×3
    affine mapping output pixel coordinates to input pixel coordinates.

    Args:
        image: 2-D input.
        factor: output pixel size / input pixel size (> 0).
        sigma_px: Gaussian sigma in input pixels before sampling; default
            anti-aliasing ``0.5 · factor`` when downsampling.
    """
    if sigma_px is None:
        sigma_px = 0.5 * factor if factor > 1 else 0.0
    img = image.astype(np.float32, copy=False)
    if sigma_px > 0:
        img = ndimage.gaussian_filter(img, sigma_px, mode="nearest", truncate=3.0)
    shape = (int(image.shape[0] // factor), int(image.shape[1] // factor))
    to_input = scale_matrix(factor)
    if factor == int(factor) and sigma_px == 0 and factor >= 1:
        f = int(factor)
        out = img[: shape[0] * f, : shape[1] * f].reshape(shape[0], f, shape[1], f).mean((1, 3))
        return out.astype(np.float32), to_input
    rows = (np.arange(shape[0]) + 0.5) * factor - 0.5
    cols = (np.arange(shape[1]) + 0.5) * factor - 0.5
    out = ndimage.map_coordinates(img, np.meshgrid(rows, cols, indexing="ij"), order=1,
                                  mode="nearest")
    return out.astype(np.float32), to_input


REGION_BLOCK_PX = 1024  # input px per block edge of smooth_resample_regions


def smooth_resample_regions(reader, factor: float, sigma_px: float | None = None,
                            block_px: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`smooth_resample` of a large image read block by block (bounded memory).

    ``reader`` has ``shape`` (rows, cols) and ``read(r0, r1, c0, c1)`` (an
    :class:`em2fm.lazy.RawRegionReader`, a montage, …). Each block of output pixels is
    computed from its input footprint (about ``block_px``² px) plus a halo of the Gaussian
    radius + 2 px: the same float32 filter passes and linear sampling on the same values,
    so the result equals the whole-image :func:`smooth_resample` bit for bit. Memory: one
    block and the (small) output.
    """
    if sigma_px is None:
        sigma_px = 0.5 * factor if factor > 1 else 0.0
    h, w = reader.shape
    shape = (int(h // factor), int(w // factor))
    to_input = scale_matrix(factor)
    out = np.empty(shape, np.float32)
    block_px = block_px or REGION_BLOCK_PX
    step = max(1, int(block_px // max(factor, 1.0)))  # output px per block edge
    if factor == int(factor) and sigma_px == 0 and factor >= 1:
        f = int(factor)
        for i0 in range(0, shape[0], step):
            i1 = min(shape[0], i0 + step)
            for j0 in range(0, shape[1], step):
                j1 = min(shape[1], j0 + step)
                img = reader.read(i0 * f, i1 * f, j0 * f, j1 * f).astype(np.float32)
                out[i0:i1, j0:j1] = img.reshape(i1 - i0, f, j1 - j0, f).mean((1, 3))
        return out, to_input
    halo = (int(3.0 * sigma_px + 0.5) if sigma_px > 0 else 0) + 2
    all_rows = (np.arange(shape[0]) + 0.5) * factor - 0.5
    all_cols = (np.arange(shape[1]) + 0.5) * factor - 0.5
    for i0 in range(0, shape[0], step):
        rows = all_rows[i0:i0 + step]
        a = max(0, math.floor(rows[0]) - halo)
        b = min(h, math.ceil(rows[-1]) + halo + 1)
        for j0 in range(0, shape[1], step):
            cols = all_cols[j0:j0 + step]
            c = max(0, math.floor(cols[0]) - halo)
            d = min(w, math.ceil(cols[-1]) + halo + 1)
            img = np.asarray(reader.read(a, b, c, d)).astype(np.float32)
            if sigma_px > 0:
                img = ndimage.gaussian_filter(img, sigma_px, mode="nearest", truncate=3.0)
            out[i0:i0 + len(rows), j0:j0 + len(cols)] = ndimage.map_coordinates(
                img, np.meshgrid(rows - a, cols - c, indexing="ij"), order=1, mode="nearest")
    return out, to_input


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices reflected into ``[0, n)`` like ``np.pad(mode='reflect')`` (edge not repeated)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def geometry_from_meta(meta: dict) -> ImageGeometry:
    """ImageGeometry of an ingested image's JSON metadata (``fm`` or ``em`` of ingest)."""
    shape = meta["shape"][-2:]
    return ImageGeometry(shape_yx=(int(shape[0]), int(shape[1])),
                         pixel_size_m=tuple(meta["pixel_size_m"]),  # type: ignore[arg-type]
                         centre_m=tuple(meta["centre_m"]),  # type: ignore[arg-type]
                         rotation_rad=float(meta["rotation_rad"]),
                         shear=float(meta.get("shear", 0.0)))
