"""Widefield FM: fluorophore density to photo-electrons (PSF, illumination), camera."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..geometry import ImageGeometry
from .anatomy import _lognormal_factor, _random_in_disc
from .params import SimulationParams
from .tissue import Tissue, fine_geometry

log = logging.getLogger(__name__)

_PSF_SIGMA_PER_WAVELENGTH = 0.21  # Gaussian approximation of the widefield Airy PSF


def psf_sigma_nm(params: SimulationParams, emission_nm: float) -> float:
    """Gaussian sigma (nm) of the in-focus widefield PSF: 0.21 λ_em / NA."""
    return _PSF_SIGMA_PER_WAVELENGTH * emission_nm / params.fm_numerical_aperture


@dataclass(frozen=True)
class FmAcquisition:
    """Per-section FM acquisition conditions (drawn by :func:`fm_acquisition`).

    Attributes:
        brightness: per channel (Hoechst, insulin) brightness factor (lognormal, mean 1).
        illumination_centre_um: illumination maximum relative to the FM field centre, along
            the FM pixel axes (x = columns, y = rows; µm).
        defocus_sigma_nm: extra Gaussian blur sigma (nm), added in quadrature to the PSF.
    """

    brightness: tuple[float, float]
    illumination_centre_um: tuple[float, float]
    defocus_sigma_nm: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly copy."""
        return {"brightness": list(self.brightness),
                "illumination_centre_um": list(self.illumination_centre_um),
                "defocus_sigma_nm": self.defocus_sigma_nm}


def fm_acquisition(params: SimulationParams, rng: np.random.Generator) -> FmAcquisition:
    """Draw one section's acquisition conditions; always the same random numbers are used
    (2 normals, 3 uniforms), whatever the parameters."""
    z = rng.standard_normal(2)
    brightness = _lognormal_factor(z, params.fm_section_brightness_cv)
    half_width_um = params.fm_field_um / 2
    centre = _random_in_disc(rng, params.fm_illumination_offset_max_frac * half_width_um)
    defocus = float(rng.uniform()) * params.fm_defocus_sigma_max_nm
    return FmAcquisition((float(brightness[0]), float(brightness[1])),
                         (float(centre[0]), float(centre[1])), defocus)


def illumination_profile(params: SimulationParams, acquisition: FmAcquisition,
                         shape_yx: tuple[int, int]) -> np.ndarray:
    """Relative widefield illumination (1 at its maximum) at the FM pixel centres, (Y, X).

    ``exp(ln(ratio) · r² / R²)``: ``r`` the distance from the illumination centre, ``R``
    the half-diagonal of the FM field, ``ratio`` = ``fm_vignetting_corner_ratio``, so that a
    centred illumination falls to ``ratio`` at the field corners.
    """
    rows, cols = shape_yx
    pixel_um = params.fm_pixel_size_nm * 1e-3
    x = (np.arange(cols) - (cols - 1) / 2) * pixel_um - acquisition.illumination_centre_um[0]
    y = (np.arange(rows) - (rows - 1) / 2) * pixel_um - acquisition.illumination_centre_um[1]
    half_diagonal_sq = ((rows * pixel_um) ** 2 + (cols * pixel_um) ** 2) / 4
    k = math.log(params.fm_vignetting_corner_ratio) / half_diagonal_sq
    return np.exp(k * (y[:, None] ** 2 + x[None, :] ** 2))


def _fm_photons(params: SimulationParams, tissue: Tissue, geometry: ImageGeometry,
                acquisition: FmAcquisition) -> tuple[np.ndarray, np.ndarray]:
    """Expected photo-electrons per FM pixel, total and specific, shape (2, Y, X) each.

    Fluorophore densities (labelling factors included) are blurred by the PSF widened by
    the section's defocus, integrated into pixels, then scaled by the illumination profile
    and the section's per-channel brightness; the camera offset is added later. ``geometry``
    is the TRUE FM placement: its pixel size includes the calibration error.
    """
    # true pixel size (nm); exactly the nominal one when the geometry carries it
    pixel_nm = params.fm_pixel_size_nm * (geometry.pixel_size_m[0]
                                          / (params.fm_pixel_size_nm * 1e-9))
    factor = math.ceil(pixel_nm / params.fm_render_pitch_max_nm - 1e-9)
    pitch_nm = pixel_nm / factor
    sigma = {c: math.hypot(psf_sigma_nm(params, em), acquisition.defocus_sigma_nm) for c, em in
             (("h", params.hoechst_emission_nm), ("i", params.insulin_emission_nm))}
    margin = math.ceil(4 * max(sigma.values()) / pitch_nm) + 2
    fine = fine_geometry(geometry, factor, margin)
    dens = tissue.render(fine, em=False)

    def to_pixels(image: np.ndarray, sigma_nm: float) -> np.ndarray:
        blurred = ndimage.gaussian_filter(image.astype(np.float64), sigma_nm / pitch_nm,
                                          mode="nearest")
        inner = blurred[margin:-margin, margin:-margin]
        rows, cols = geometry.shape_yx
        return inner.reshape(rows, factor, cols, factor).mean(axis=(1, 3))

    hoechst_specific = params.hoechst_photons_e * to_pixels(dens["dna"], sigma["h"])
    hoechst_other = to_pixels(
        params.hoechst_photons_e * params.hoechst_rna_fraction * dens["rna"]
        + params.hoechst_bleed_through * params.insulin_photons_e * dens["insulin"]
        + params.hoechst_autofluorescence_e * dens["autofluorescence"],
        sigma["h"])
    insulin_specific = params.insulin_photons_e * to_pixels(dens["insulin"], sigma["i"])
    insulin_other = to_pixels(
        params.insulin_photons_e * params.insulin_nonspecific_fraction * dens["tissue"]
        + params.insulin_autofluorescence_e * dens["autofluorescence"],
        sigma["i"])
    specific = np.stack([hoechst_specific, insulin_specific])
    total = specific + np.stack([
        hoechst_other + params.hoechst_background_e,
        insulin_other + params.insulin_background_e,
    ])
    scale = illumination_profile(params, acquisition, geometry.shape_yx)[None] * np.asarray(
        acquisition.brightness)[:, None, None]
    return total * scale, specific * scale


def _camera(params: SimulationParams, electrons: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Measured counts (uint16) and their expectation (float32 ADU) for expected electrons."""
    gain, offset = params.fm_gain_adu_per_e, params.fm_camera_offset_adu
    full_scale = 2**params.fm_significant_bits - 1
    measured_e = rng.poisson(electrons) + rng.normal(0.0, params.fm_read_noise_e, electrons.shape)
    noisy = offset + gain * measured_e
    clipped = float(np.mean((noisy < 0) | (noisy > full_scale)))
    if clipped > 1e-4:
        log.warning("FM: %.2g%% of the pixels clip", 100 * clipped)
    fm = np.clip(np.rint(noisy), 0, full_scale).astype(np.uint16)
    return fm, (offset + gain * electrons).astype(np.float32)


