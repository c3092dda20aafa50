"""SEM (backscattered electrons): stain density to ADU, beam blur, correlated noise."""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from ..geometry import ImageGeometry
from .params import SimulationParams
from .tissue import Tissue

log = logging.getLogger(__name__)


def em_noise_std(params: SimulationParams, signal: np.ndarray) -> np.ndarray:
    """SEM noise standard deviation (ADU) for a non-inverted noise-free ``signal`` (ADU).

    ``std² = ref² · (dwell_ref / dwell) · ((1 - f) + f · (signal - black) / (mid - black))``
    with ``mid`` halfway between resin and full stain and ``f`` the shot-noise fraction.
    """
    black = params.em_black_level_adu
    mid = (params.em_resin_level_adu + params.em_stain_level_adu) / 2
    f = params.em_shot_noise_fraction
    relative = (1.0 - f) + f * np.clip(signal - black, 0.0, None) / max(mid - black, 1e-9)
    scale = params.em_noise_std_ref_adu * math.sqrt(
        params.em_noise_ref_dwell_s / params.em_dwell_time_s)
    return (scale * np.sqrt(relative)).astype(np.float32)


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int],
                     lag1: float) -> np.ndarray:
    """Unit-variance Gaussian noise whose lag-1 correlation along x and y equals ``lag1``.

    White noise filtered by the 3-tap kernel ``[a, 1, a]`` on each axis, where
    ``2a / (1 + 2a²) = lag1``.
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    if lag1 <= 0:
        return noise
    a = (1.0 - math.sqrt(1.0 - 2.0 * lag1**2)) / (2.0 * lag1)
    kernel = np.array([a, 1.0, a], np.float32) / math.sqrt(1.0 + 2.0 * a * a)
    for axis in (0, 1):
        noise = ndimage.correlate1d(noise, kernel, axis=axis, mode="wrap")
    return noise


def _render_em(params: SimulationParams, tissue: Tissue, geometry: ImageGeometry,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured SEM (uint16), noise-free SEM (float32 ADU) and labels (uint8)."""
    rendered = tissue.render(geometry, em=True)
    gain = params.em_stain_level_adu - params.em_resin_level_adu
    signal = params.em_resin_level_adu + gain * rendered.pop("stain")
    sigma_px = params.em_beam_sigma_nm / params.em_pixel_size_nm
    if sigma_px > 0:
        signal = ndimage.gaussian_filter(signal, sigma_px, mode="nearest")
    std = em_noise_std(params, signal)
    full_scale = 2**params.em_significant_bits - 1
    clean = (full_scale - signal) if params.em_invert else signal
    noisy = clean + std * correlated_noise(rng, clean.shape, params.em_noise_correlation)
    clipped = float(np.mean((noisy < 0) | (noisy > full_scale)))
    if clipped > 1e-4:
        log.warning("SEM: %.2g%% of the pixels clip", 100 * clipped)
    em = np.clip(np.rint(noisy), 0, full_scale).astype(np.uint16)
    return em, clean.astype(np.float32), rendered["label"]


