"""One section's tissue: a deterministic function of stage position, with its labelling."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..geometry import ImageGeometry
from .anatomy import (
    _ACINAR,
    _ALPHA,
    _BETA,
    _CHUNK_POINTS,
    _lognormal_factor,
    _Textures,
    _Warp,
)
from .cells import _Cells, _make_cells, _make_islet
from .layers import _Layers
from .organelles import _Organelles, _place_organelles
from .params import SimulationParams

log = logging.getLogger(__name__)


def pixel_points_um(geometry: ImageGeometry, row0: int = 0, row1: int | None = None) -> np.ndarray:
    """Stage positions (µm, shape (N, 2)) of the pixel centres of rows ``row0:row1``, row-major."""
    row1 = geometry.shape_yx[0] if row1 is None else row1
    matrix = geometry.pixel_to_stage() * 1e6
    rows, cols = np.mgrid[row0:row1, 0:geometry.shape_yx[1]]
    px = np.stack([cols.ravel(), rows.ravel()], axis=-1).astype(float)
    return px @ matrix[:2, :2].T + matrix[:2, 2]


def fine_geometry(geometry: ImageGeometry, factor: int, margin: int) -> ImageGeometry:
    """Sub-sampling grid of ``geometry``: ``factor``² samples per pixel plus ``margin`` samples.

    Fine sample ``(r, c)`` with ``r = row·factor + i + margin`` (``0 ≤ i < factor``) lies in
    pixel ``row``; the mean position of a pixel's samples is the pixel centre.
    """
    rows, cols = geometry.shape_yx
    pitch = (geometry.pixel_size_m[0] / factor, geometry.pixel_size_m[1] / factor)
    return ImageGeometry(
        (rows * factor + 2 * margin, cols * factor + 2 * margin),
        pitch,
        geometry.centre_m,
        geometry.rotation_rad,
        geometry.shear,
    )



@dataclass
class _Labelling:
    """Fluorophore labelling efficiency of the section's structures (true density factors).

    Invisible in the SEM, part of the true fluorophore density (hence of ``fm_clean`` and
    ``fm_specific``). Lognormal factors of mean 1 drawn as fixed-size standard normal
    arrays, so a CV changes the factors' spread, never which random numbers are used.

    Attributes:
        hoechst_nucleus: (N cells,) Hoechst staining factor of each cell's nucleus, 0 for
            the nuclei that take up no stain (``hoechst_stained``).
        hoechst_stained: (N cells,) whether each nucleus takes up the Hoechst stain
            (probability ``hoechst_stained_nucleus_fraction``).
        insulin_cell: (N cells,) insulin labelling factor of each cell (used for beta cells).
        insulin_granule: (M organelles,) labelling factor of each granule's exposed core.
        insulin_organelle: (M,) total insulin factor of each organelle: its host cell's
            factor times its own.
    """

    hoechst_nucleus: np.ndarray
    hoechst_stained: np.ndarray
    insulin_cell: np.ndarray
    insulin_granule: np.ndarray
    insulin_organelle: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, params: SimulationParams, cells: _Cells,
             organelles: _Organelles, warp: _Warp) -> _Labelling:
        """Draw the factors from ``rng`` (cells first, then organelles).

        Which nuclei take up Hoechst is drawn last (N uniforms), so it changes no other
        factor; with ``hoechst_stained_nucleus_fraction = 1`` every nucleus is stained.
        """
        n, m = len(cells.seeds), len(organelles.kind)
        hoechst = _lognormal_factor(rng.standard_normal(n), params.hoechst_nucleus_cv)
        cell = _lognormal_factor(rng.standard_normal(n), params.insulin_cell_cv)
        granule = _lognormal_factor(rng.standard_normal(m), params.insulin_granule_cv)
        host = (cells.membrane_distance(warp(organelles.centre))[0] if m
                else np.zeros(0, int))
        stained = rng.uniform(size=n) < params.hoechst_stained_nucleus_fraction
        hoechst = np.where(stained, hoechst, 0.0)
        return cls(hoechst, stained, cell, granule, cell[host] * granule)



class Tissue:
    """One section's tissue, a deterministic function of stage position.

    Args:
        params: simulation parameters.
        rng: random generator of the tissue's structure (consumed).
        origin_m: stage position (m) of the SEM field centre; tissue is built in µm around it.
        half_extent_um: half size of the box (µm, around the origin) that must be covered.
        labelling_rng: generator of the labelling factors (:class:`_Labelling`, consumed
            after the structure is built); by default a child spawned from ``rng``. Kept
            apart so that labelling parameters never change the structure (nor the SEM).
    """

    def __init__(self, params: SimulationParams, rng: np.random.Generator,
                 origin_m: tuple[float, float], half_extent_um: float,
                 labelling_rng: np.random.Generator | None = None) -> None:
        if labelling_rng is None:
            labelling_rng = rng.spawn(1)[0]
        self.params = params
        self.origin_um = np.asarray(origin_m, float) * 1e6
        self.textures = _Textures.make(rng, params)
        self.warp = _Warp(self.textures, params.membrane_waviness_um)
        self.islet = _make_islet(rng, params)
        pad = 2.5 * params.acinar_cell_size_um + 3 * params.membrane_waviness_um
        self.cells = _make_cells(rng, params, self.islet,
                                 np.full(2, -half_extent_um - pad),
                                 np.full(2, half_extent_um + pad))
        box = half_extent_um + 1.0 + 3 * params.membrane_waviness_um
        self.organelles = _place_organelles(rng, params, self.cells, np.full(2, -box),
                                            np.full(2, box), self.warp)
        self.labelling = _Labelling.make(labelling_rng, params, self.cells, self.organelles,
                                         self.warp)
        log.debug("tissue: %d cells (%d acinar, %d beta, %d alpha), %d organelles",
                  len(self.cells.kind), *(int((self.cells.kind == k).sum())
                                          for k in (_ACINAR, _BETA, _ALPHA)),
                  len(self.organelles.kind))

    def stage_to_local(self, points_um: np.ndarray) -> np.ndarray:
        """Stage µm → local µm around the SEM centre (the frame of the organelles)."""
        return points_um - self.origin_um

    def render(self, geometry: ImageGeometry, em: bool) -> dict[str, np.ndarray]:
        """Render every pixel centre of ``geometry`` (box-integrated over its pixel).

        Returns ``{"stain", "label"}`` when ``em`` else ``{"dna", "rna", "insulin", "tissue",
        "autofluorescence"}`` (see :meth:`_Layers.fm_outputs`), each of shape
        ``geometry.shape_yx``.
        """
        rows, cols = geometry.shape_yx
        pitch = float(geometry.pixel_size_m[0]) * 1e6
        step = max(1, _CHUNK_POINTS // cols)
        out: dict[str, np.ndarray] = {}
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            values = self.sample(pixel_points_um(geometry, r0, r1), pitch, em)
            for key, value in values.items():
                if key not in out:
                    out[key] = np.empty((rows, cols), value.dtype)
                out[key][r0:r1] = value.reshape(r1 - r0, cols)
        return out

    def sample(self, points_um: np.ndarray, pitch_um: float, em: bool) -> dict[str, np.ndarray]:
        """Sample the tissue at stage points (µm, (N, 2)) with pixel footprint ``pitch_um``."""
        layers = _Layers(self, self.stage_to_local(points_um), pitch_um, em)
        return layers.em_outputs() if em else layers.fm_outputs()



def build_tissue(params: SimulationParams, rng: np.random.Generator,
                 em: ImageGeometry, fm_true: ImageGeometry,
                 labelling_rng: np.random.Generator | None = None) -> Tissue:
    """Tissue covering the SEM field and the true FM field (plus the PSF margin).

    The box is that of the FM field with the NOMINAL pixel size, so that the FM pixel-size
    calibration error does not change the tissue; the tissue is defined well beyond the box
    (cells up to 2.5 cells, organelles ≥ 1.9 µm further), and the box grows only where the
    true FM field reaches more than :data:`_TISSUE_SLACK_UM` beyond it (large errors).
    """
    nominal = params.fm_pixel_size_nm * 1e-9
    fm_nominal = ImageGeometry(fm_true.shape_yx, (nominal, nominal), fm_true.centre_m,
                               fm_true.rotation_rad, fm_true.shear)
    half = max(_reach_um(em, fm_nominal), _reach_um(em, fm_true) - _TISSUE_SLACK_UM)
    return Tissue(params, rng, em.centre_m, half, labelling_rng)


_TISSUE_SLACK_UM = 0.5  # how far the true FM field may reach beyond the tissue box (µm)


def _reach_um(em: ImageGeometry, fm: ImageGeometry) -> float:
    """Half side (µm) of the square around the SEM centre holding the FM field, + 1 µm."""
    corners = np.array([[-0.5, -0.5], [fm.shape_yx[1] - 0.5, fm.shape_yx[0] - 0.5]])
    corners = np.array([[x, y] for x in corners[:, 0] for y in corners[:, 1]])
    matrix = fm.pixel_to_stage()
    stage = corners @ matrix[:2, :2].T + matrix[:2, 2]
    return float(np.abs(stage - np.asarray(em.centre_m)).max()) * 1e6 + 1.0


