"""One simulated section: placements, random generators by role, SEM and FM images."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..geometry import ImageGeometry
from .anatomy import _random_in_disc
from .em import _render_em
from .fm import FmAcquisition, _camera, _fm_photons, fm_acquisition
from .params import SimulationParams
from .tissue import Tissue, build_tissue

log = logging.getLogger(__name__)


@dataclass
class SimulatedSection:
    """One simulated section: measured images, their placement and the ground truth.

    Attributes:
        name: section name (e.g. ``S001``).
        em: (Y, X) uint16 measured SEM (backscattered electrons) image, ADU.
        em_geometry: SEM placement (the reference, rotation 0; metadata == truth).
        em_dwell_time_s: SEM dwell time (s).
        em_voltage_v: SEM acceleration voltage (V).
        em_current_a: SEM probe current (A).
        fm: (C, Y, X) uint16 measured widefield FM, camera counts (ADU).
        channels: ``(name, excitation_nm, emission_nm)`` per FM channel.
        fm_geometry_meta: FM placement as written to metadata (true + stage error).
        fm_geometry_true: true FM placement (true pixel size: nominal × (1 + calibration
            error), see ``fm_pixel_size_error_max_frac``).
        fm_clean: (C, Y, X) float32 expectation of ``fm`` (ADU), offset, background,
            autofluorescence, aspecific binding and bleed-through included.
        fm_specific: (C, Y, X) float32 noise-free ADU of the specific label only (no offset,
            background, autofluorescence, aspecific binding or bleed-through), imaged like
            the rest: labelling factors, PSF with defocus, illumination profile and section
            brightness included, so ``fm_clean - offset - fm_specific ≥ 0``.
        em_clean: (Y, X) float32 noise-free SEM signal (ADU).
        labels: (Y, X) uint8 tissue class on the EM grid, codes in :data:`LABELS`.
    """

    name: str
    em: np.ndarray
    em_geometry: ImageGeometry
    em_dwell_time_s: float
    em_voltage_v: float
    em_current_a: float
    fm: np.ndarray
    channels: list[tuple[str, float, float]]
    fm_geometry_meta: ImageGeometry
    fm_geometry_true: ImageGeometry
    fm_clean: np.ndarray
    fm_specific: np.ndarray
    em_clean: np.ndarray
    labels: np.ndarray


# ----------------------------------------------------------------------------- geometry


def section_em_geometry(params: SimulationParams, index: int) -> ImageGeometry:
    """SEM placement of section ``index``: centre (x0 + index·pitch, y) on the stage."""
    pixel = params.em_pixel_size_nm * 1e-9
    centre = (
        (params.section_stage_x0_mm + index * params.section_stage_pitch_mm) * 1e-3,
        params.section_stage_y_mm * 1e-3,
    )
    n = params.em_size_px
    return ImageGeometry((n, n), (pixel, pixel), centre, 0.0)



def _fm_geometries(
    params: SimulationParams, em: ImageGeometry, rng: np.random.Generator
) -> tuple[ImageGeometry, ImageGeometry]:
    """True and metadata FM placements.

    The true rotation is jittered; the metadata is off by the stage error (centre, rotation)
    and keeps the nominal pixel size while the true one is off by the calibration error
    ``u`` (``fm_pixel_size_error_max_frac``), drawn last so that the other draws do not
    depend on it (``u = 0``: the true pixel size is exactly the nominal one).
    """
    rotation = math.radians(
        params.fm_rotation_deg + rng.uniform(-1.0, 1.0) * params.fm_rotation_jitter_deg)
    centre = np.asarray(em.centre_m) + _random_in_disc(rng, params.fm_centre_offset_max_um) * 1e-6
    pixel = params.fm_pixel_size_nm * 1e-9
    shape = (params.fm_size_px, params.fm_size_px)
    shift = rng.uniform(params.fm_meta_shift_min_um, params.fm_meta_shift_max_um) * 1e-6
    direction = rng.uniform(0.0, 2 * math.pi)
    rotation_error = math.radians(
        rng.uniform(-1.0, 1.0) * params.fm_meta_rotation_error_max_deg)
    meta = ImageGeometry(
        shape,
        (pixel, pixel),
        (float(centre[0] + shift * math.cos(direction)),
         float(centre[1] + shift * math.sin(direction))),
        (rotation + rotation_error) % (2 * math.pi),
    )
    scale = 1.0 + rng.uniform(-1.0, 1.0) * params.fm_pixel_size_error_max_frac
    true_pixel = pixel * scale
    true = ImageGeometry(shape, (true_pixel, true_pixel), (float(centre[0]), float(centre[1])),
                         rotation % (2 * math.pi))
    return true, meta



_GENERATORS = ("geometry", "tissue", "em_noise", "fm_noise", "labelling", "fm_acquisition")


def _section_generators(index: int, seed: int) -> dict[str, np.random.Generator]:
    """Independent child generators of section ``index``, by role (see :data:`_GENERATORS`).

    Children of ``SeedSequence([seed, index])`` are keyed by their position, so the first
    four (geometry, tissue, SEM noise, FM noise) are those of the original four-child
    layout; ``labelling`` (true fluorophore labelling factors, part of the tissue) and
    ``fm_acquisition`` (brightness, illumination centre, defocus) were appended.
    """
    children = np.random.default_rng(np.random.SeedSequence([seed, index])).spawn(
        len(_GENERATORS))
    return dict(zip(_GENERATORS, children, strict=True))


def section_layout(params: SimulationParams, index: int,
                   seed: int) -> tuple[ImageGeometry, ImageGeometry, ImageGeometry, Tissue]:
    """SEM geometry, true and metadata FM geometries and the tissue of section ``index``.

    Exactly those used by :func:`simulate_section` with the same arguments (for tests and
    ground-truth export). The tissue includes its fluorophore labelling factors.
    """
    rngs = _section_generators(index, seed)
    em_geometry = section_em_geometry(params, index)
    fm_true, fm_meta = _fm_geometries(params, em_geometry, rngs["geometry"])
    tissue = build_tissue(params, rngs["tissue"], em_geometry, fm_true, rngs["labelling"])
    return em_geometry, fm_true, fm_meta, tissue


def section_fm_acquisition(params: SimulationParams, index: int, seed: int) -> FmAcquisition:
    """FM acquisition conditions of section ``index`` (those :func:`simulate_section` uses)."""
    return fm_acquisition(params, _section_generators(index, seed)["fm_acquisition"])


def _simulate_fm(params: SimulationParams, tissue: Tissue, fm_true: ImageGeometry, index: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured FM (uint16), its expectation and the specific signal (float32 ADU)."""
    rngs = _section_generators(index, seed)
    acquisition = fm_acquisition(params, rngs["fm_acquisition"])
    electrons, specific_e = _fm_photons(params, tissue, fm_true, acquisition)
    fm, fm_clean = _camera(params, electrons, rngs["fm_noise"])
    fm_specific = (params.fm_gain_adu_per_e * specific_e).astype(np.float32)
    return fm, fm_clean, fm_specific


def simulate_section(params: SimulationParams, index: int, seed: int,
                     name: str | None = None) -> SimulatedSection:
    """Simulate section ``index`` (deterministic in ``(params, index, seed)``).

    The section's generator is ``np.random.default_rng(np.random.SeedSequence([seed, index]))``;
    independent child generators (geometry, tissue, SEM noise, FM noise, labelling, FM
    acquisition) are spawned from it, so e.g. changing the dwell time changes the SEM noise
    only, and no FM parameter changes the tissue structure or the SEM image.
    """
    name = name if name is not None else f"S{index + 1:03d}"
    em_geometry, fm_true, fm_meta, tissue = section_layout(params, index, seed)
    em, em_clean, labels = _render_em(params, tissue, em_geometry,
                                      _section_generators(index, seed)["em_noise"])
    fm, fm_clean, fm_specific = _simulate_fm(params, tissue, fm_true, index, seed)
    log.info("simulated %s: SEM %s px, FM %s px, FM rotation %.2f°", name, em.shape,
             fm.shape[1:], math.degrees(fm_true.rotation_rad))
    return SimulatedSection(
        name=name,
        em=em,
        em_geometry=em_geometry,
        em_dwell_time_s=params.em_dwell_time_s,
        em_voltage_v=params.em_voltage_v,
        em_current_a=params.em_current_a,
        fm=fm,
        channels=params.channels,
        fm_geometry_meta=fm_meta,
        fm_geometry_true=fm_true,
        fm_clean=fm_clean,
        fm_specific=fm_specific,
        em_clean=em_clean,
        labels=labels,
    )


