"""Tiles: EM input and registered FM target on matching grids, with a coverage mask.

Two grids, both aligned with the EM image axes and anchored at its top-left
corner:

- the **target grid** at FM resolution (``pixel_size`` ≈ the FM pixel), on which
  the network predicts and the registered FM is resampled (cubic spline);
- the **work grid** for the EM input, ``em_scale`` times finer, so that each
  target pixel is exactly ``em_scale × em_scale`` EM input pixels.

Tile ``k`` with origin ``(row, col)`` (target px) pairs
``em[row·s : (row+T)·s, col·s : (col+T)·s]`` with ``fm[:, row : row+T, col : col+T]``
(``s`` = em_scale, ``T`` = tile_size). Tiles lie fully inside ``mask``, the
area both modalities cover. Training may also draw other windows inside
the mask; prediction covers the whole EM field.

Bounded memory (:func:`run`): the raw EM is never loaded. It is read from the ingest npz
region by region and prepared block by block (:class:`em2fm.lazy.PreparedEM`, the same
anti-aliasing and sampling as :func:`prepare_em`, z-scored with streamed statistics), and
the work-grid EM is written to the tiles npz band by band (:class:`em2fm.io.NpzWriter`).
Only target-grid arrays (FM, mask) are held whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io
from .geometry import (
    ImageGeometry,
    apply_affine,
    geometry_from_meta,
    scale_matrix,
    smooth_resample,
    warp,
)
from .lazy import PreparedEM, open_array
from .odemis import Channel, OdemisImage
from .pyramid import write_array

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileParams:
    """Tiling settings (config ``tiles``)."""

    pixel_size_nm: float | None = None  # target grid pixel; None: the section's FM pixel
    em_scale: int = 4  # EM input pixels per target pixel along each axis
    tile_size: int = 32  # target px
    margin: int | None = None  # EM context (target px); used by train (em2fm.receptive)


@dataclass(frozen=True)
class TargetGrid:
    """The FM-resolution target grid of a section and its EM work grid.

    Attributes:
        shape_yx: target grid size (rows, columns) in target px.
        pixel_size_m: target pixel size in m.
        em_scale: work (EM input) pixels per target pixel.
        target_to_em_px: 3×3 affine from target px to EM px.
        geometry: stage placement of the target grid (Odemis conventions).
    """

    shape_yx: tuple[int, int]
    pixel_size_m: float
    em_scale: int
    target_to_em_px: np.ndarray
    geometry: ImageGeometry

    @property
    def work_shape_yx(self) -> tuple[int, int]:
        """EM input grid size in work px."""
        return (self.shape_yx[0] * self.em_scale, self.shape_yx[1] * self.em_scale)

    @property
    def work_pixel_size_m(self) -> float:
        """EM input pixel size in m."""
        return self.pixel_size_m / self.em_scale


def target_pixel_m(ingest_meta: dict, pixel_size_nm: float | None) -> float:
    """Target pixel size (m): the configured one, else the section's FM pixel size (x)."""
    if pixel_size_nm is not None:
        return float(pixel_size_nm) * 1e-9
    return float(ingest_meta["fm"]["pixel_size_m"][0])


def make_grid(em_geometry: ImageGeometry, pixel_size_m: float, em_scale: int) -> TargetGrid:
    """Largest target grid of ``pixel_size_m`` inside the EM field, from its top-left corner."""
    em_px = float(em_geometry.pixel_size_m[0])
    factor = pixel_size_m / em_px
    ey, ex = em_geometry.shape_yx
    shape = (int(ey // factor), int(ex // factor))
    if min(shape) < 1:
        raise ValueError(f"EM field {em_geometry.field_m} m is smaller than one target pixel "
                         f"({pixel_size_m} m)")
    target_to_em = scale_matrix(factor)
    centre_em = apply_affine(target_to_em, np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2]))
    centre_stage = apply_affine(em_geometry.pixel_to_stage(), centre_em)
    geometry = ImageGeometry(shape_yx=shape, pixel_size_m=(pixel_size_m, pixel_size_m),
                             centre_m=(float(centre_stage[0]), float(centre_stage[1])),
                             rotation_rad=em_geometry.rotation_rad, shear=em_geometry.shear)
    return TargetGrid(shape_yx=shape, pixel_size_m=pixel_size_m, em_scale=em_scale,
                      target_to_em_px=target_to_em, geometry=geometry)


def prepare_em(em: np.ndarray, em_geometry: ImageGeometry, grid: TargetGrid) -> np.ndarray:
    """EM resampled to the work grid (anti-aliased) and z-scored per section (float32)."""
    factor = grid.work_pixel_size_m / float(em_geometry.pixel_size_m[0])
    work, _ = smooth_resample(em, factor)
    wy, wx = grid.work_shape_yx
    work = work[:wy, :wx]
    if work.shape != (wy, wx):
        raise ValueError(f"EM work image {work.shape} smaller than the grid {(wy, wx)}")
    mean, std = float(work.mean()), float(work.std())
    return ((work - mean) / max(std, 1e-6)).astype(np.float32)


EM_PERCENTILES = (1.0, 99.0)  # per-section EM percentile normalisation


def normalise_em(work: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """The network's EM input from a :func:`prepare_em` work image (per section).

    ``zscore``: unchanged (mean 0, std 1 over the section). ``percentile``: the
    :data:`EM_PERCENTILES` of the section map to ±2, robust to a few saturated or empty
    pixels (charging, holes, out-of-section borders) that shift the mean and std.
    """
    if mode == "zscore":
        return work
    if mode != "percentile":
        raise ValueError(f"EM normalisation {mode!r}: use zscore or percentile")
    lo, hi = np.percentile(work, EM_PERCENTILES)
    return ((work - (lo + hi) / 2) / max((hi - lo) / 4, 1e-6)).astype(np.float32)


def registered_fm(fm: np.ndarray, fm_to_em_px: np.ndarray, target_to_em_px: np.ndarray,
                  shape_yx: tuple[int, int]) -> np.ndarray:
    """FM (C, Y, X) resampled onto a target grid (cubic), NaN where FM is absent.

    Args:
        fm: FM channels on their own pixel grid.
        fm_to_em_px: 3×3 affine FM px → EM px (registered, or the true one).
        target_to_em_px: 3×3 affine target px → EM px of the grid.
        shape_yx: target grid shape.
    """
    fm_to_target = np.linalg.inv(target_to_em_px) @ fm_to_em_px
    return warp(fm.astype(np.float32), fm_to_target, shape_yx, order=3)


def window_origins(mask: np.ndarray, size: int, stride: int = 1) -> np.ndarray:
    """Top-left corners (row, col) of ``size``² windows lying fully inside ``mask``.

    Windows start every ``stride`` px; ``stride = size`` gives non-overlapping tiles.
    """
    if mask.shape[0] < size or mask.shape[1] < size:
        return np.zeros((0, 2), np.int32)
    sat = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r = np.arange(0, mask.shape[0] - size + 1, stride)  # window sums on the stride grid only
    c = np.arange(0, mask.shape[1] - size + 1, stride)
    top, bottom = sat[r], sat[r + size]
    sums = bottom[:, c + size] - top[:, c + size] - bottom[:, c] + top[:, c]
    return (np.argwhere(sums == size * size) * stride).astype(np.int32)


def make_tiles(ingest_meta: dict, arrays: dict, registration: dict,
               params: TileParams) -> tuple[dict, dict]:
    """Arrays (em, fm, mask, tiles) and metadata of one section's tiles.

    ``arrays["em"]``: the raw EM as an array (then ``em`` is :func:`prepare_em`'s array),
    or a region reader such as :func:`em2fm.lazy.open_array` (then ``em`` is a
    :class:`em2fm.lazy.PreparedEM`, computed region by region when read: bounded memory).
    """
    em_geom = geometry_from_meta(ingest_meta["em"])
    grid = make_grid(em_geom, target_pixel_m(ingest_meta, params.pixel_size_nm), params.em_scale)
    if isinstance(arrays["em"], np.ndarray):
        em = prepare_em(arrays["em"], em_geom, grid)
    else:
        em = PreparedEM(arrays["em"], em_geom, grid, band_rows=WORK_BAND_ROWS)
    fm = registered_fm(arrays["fm"], np.asarray(registration["fm_to_em_px"]),
                       grid.target_to_em_px, grid.shape_yx)
    mask = np.all(np.isfinite(fm), axis=0)
    fm = np.nan_to_num(fm, nan=0.0)
    tiles = window_origins(mask, params.tile_size, stride=params.tile_size)
    meta = {
        "section": ingest_meta["section"],
        "channels": [c["name"] for c in ingest_meta["fm"]["channels"]],
        "target_shape": list(grid.shape_yx),
        "target_pixel_size_m": grid.pixel_size_m,
        "work_pixel_size_m": grid.work_pixel_size_m,
        "em_scale": grid.em_scale,
        "target_to_em_px": grid.target_to_em_px,
        "target_centre_m": list(grid.geometry.centre_m),
        "tile_size": params.tile_size,
        "n_tiles": len(tiles),
        "mask_fraction": float(mask.mean()),
        "registration_status": registration.get("status", "ok"),
        "use_for_training": bool(registration.get("use_for_training", True)),
    }
    return {"em": em, "fm": fm.astype(np.float32), "mask": mask, "tiles": tiles}, meta


WORK_BAND_ROWS = 256  # work px rows per band (statistics and writing)
WORK_BLOCK_COLS = 1024  # work px columns prepared at a time within a band


def save_tiles_npz(path: str | Path, arrays: dict) -> None:
    """The tiles npz: ``em`` written band by band when it is a lazy source, then the rest."""
    em = arrays["em"]
    with io.npz_writer(path) as writer:
        if isinstance(em, np.ndarray):
            writer.add("em", em)
        else:
            h, w = em.shape
            with writer.member("em", (h, w), np.float32) as write:
                for r0 in range(0, h, WORK_BAND_ROWS):
                    r1 = min(h, r0 + WORK_BAND_ROWS)
                    band = np.empty((r1 - r0, w), np.float32)
                    for c0 in range(0, w, WORK_BLOCK_COLS):
                        c1 = min(w, c0 + WORK_BLOCK_COLS)
                        band[:, c0:c1] = em.read(r0, r1, c0, c1)
                    write(band)
        for key in ("fm", "mask", "tiles"):
            writer.add(key, arrays[key])


def fm_image(ingest_meta: dict, fm: np.ndarray, mask: np.ndarray, meta: dict) -> OdemisImage:
    """The registered FM on the target grid as an Odemis image, NaN outside the FM field.

    Same grid, pixel size and stage placement as the prediction of the section (when
    ``tiles.pixel_size_nm`` is the prediction's), for side-by-side viewing.
    """
    channels = [Channel(c["name"], c.get("excitation_nm"), c.get("emission_nm"))
                for c in ingest_meta["fm"]["channels"]]
    g = geometry_from_meta(ingest_meta["em"])
    data = np.where(mask[None], fm, np.nan).astype(np.float32)
    return OdemisImage(
        name="FM registered", data=data, channels=channels, shape_cyx=data.shape,
        dtype="float32", pixel_size_m=(meta["target_pixel_size_m"],) * 2,
        centre_m=tuple(meta["target_centre_m"]), rotation_rad=g.rotation_rad, shear=g.shear,
        extra_settings={"em2fm": {"section": meta["section"], "registration_status":
                                  meta["registration_status"],
                                  "units": "FM camera counts (ADU), resampled (cubic)"}})


def run(ingest_json: str | Path, ingest_npz: str | Path, registration_json: str | Path,
        settings: dict, split: str, npz_path: str | Path, json_path: str | Path,
        fm_path: str | Path | None = None, reference_json: str | Path | None = None) -> dict:
    """Tile one section and write its arrays and metadata (the rule's entry point).

    With ``fm_path``, also the registered FM on the target grid as a tiled pyramidal
    OME-TIFF (:func:`fm_image`), to view beside the prediction. Without a configured
    ``pixel_size_nm``, the FM pixel size of ``reference_json`` (the ingest JSON of the
    first training section) is the target pixel of every section, so all sections of a
    run share the model's grid; without a reference, the section's own.
    """
    params = TileParams(**settings)
    if params.pixel_size_nm is None and reference_json:
        ref = io.read_json(reference_json)
        params = TileParams(**{**settings,
                               "pixel_size_nm": target_pixel_m(ref, None) * 1e9})
    ingest_meta = io.read_json(ingest_json)
    arrays = {"em": open_array(ingest_npz, "em"),  # read lazily: never whole
              "fm": io.load_npz(ingest_npz, keys=("fm",))["fm"]}
    arrays, meta = make_tiles(ingest_meta, arrays, io.read_json(registration_json), params)
    meta["split"] = split
    if meta["n_tiles"] == 0:
        log.warning("%s: no full %d px tile inside the FM/EM overlap (%.0f%% covered)",
                    meta["section"], params.tile_size, 100 * meta["mask_fraction"])
    save_tiles_npz(npz_path, arrays)
    if fm_path is not None:
        write_array(fm_path, fm_image(ingest_meta, arrays["fm"], arrays["mask"], meta))
    io.write_json(json_path, meta)
    log.info("%s (%s): target grid %s at %.1f nm, EM work grid %s, %d tiles, %.0f%% covered",
             meta["section"], split, meta["target_shape"], grid_nm(meta), arrays["em"].shape,
             meta["n_tiles"], 100 * meta["mask_fraction"])
    return meta


def grid_nm(meta: dict) -> float:
    """Target pixel size of a tiles JSON in nm."""
    return float(meta["target_pixel_size_m"]) * 1e9
