"""Tissue classes, stain densities, drawing primitives and random textures."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .params import SimulationParams

#: Tissue classes of :attr:`SimulatedSection.labels` (uint8 codes on the EM grid).
LABELS: dict[str, int] = {
    "extracellular": 0,  # resin, acinar lumen, interstitial / capsular matrix
    "membrane": 1,  # plasma membrane
    "acinar_cytoplasm": 2,
    "rough_er": 3,  # basal RER of acinar cells (RNA-rich)
    "zymogen_granule": 4,
    "beta_cytoplasm": 5,
    "insulin_granule": 6,
    "alpha_cytoplasm": 7,
    "glucagon_granule": 8,
    "mitochondrion": 9,
    "euchromatin": 10,
    "heterochromatin": 11,
    "nucleolus": 12,
    "nuclear_envelope": 13,
}

#: Relative heavy-metal stain density (≈ backscatter yield above resin; 0 = resin, 1 = the
#: densest structure) of each compartment. ``SimulationParams.em_resin_level_adu`` and
#: ``em_stain_level_adu`` map it to SEM counts.
STAIN_DENSITY: dict[str, float] = {
    "extracellular": 0.04,
    "lumen": 0.10,
    "membrane": 0.70,
    "acinar_cytoplasm": 0.30,
    "beta_cytoplasm": 0.22,
    "alpha_cytoplasm": 0.26,
    "rer_lamella": 0.66,
    "rer_cisterna": 0.14,
    "zymogen_granule": 0.85,
    "insulin_core": 0.95,
    "insulin_halo": 0.10,
    "glucagon_core": 0.90,
    "granule_membrane": 0.55,
    "mito_matrix": 0.42,
    "mito_crista": 0.68,
    "euchromatin": 0.25,
    "heterochromatin": 0.70,
    "nucleolus": 0.80,
    "nuclear_envelope": 0.62,
}

# Cell kinds and organelle kinds (internal codes).
_ACINAR, _BETA, _ALPHA = 0, 1, 2
_ZYMOGEN, _INSULIN, _GLUCAGON, _MITO = 0, 1, 2, 3
_CYTO_LABEL = np.array(
    [LABELS["acinar_cytoplasm"], LABELS["beta_cytoplasm"], LABELS["alpha_cytoplasm"]], np.uint8
)
_CYTO_STAIN = np.array(
    [STAIN_DENSITY[k] for k in ("acinar_cytoplasm", "beta_cytoplasm", "alpha_cytoplasm")]
)
_GRANULE_LABEL = np.array(
    [LABELS["zymogen_granule"], LABELS["insulin_granule"], LABELS["glucagon_granule"],
     LABELS["mitochondrion"]], np.uint8,
)
_FAR = 1.0e6  # µm, "no such structure here"
_CHUNK_POINTS = 1 << 19  # sample points rendered at once (bounds the memory)
_NUCLEAR_ENVELOPE_UM = 0.025  # double membrane + lamina
_ORGANELLE_GAP_UM = 0.02  # minimum cytoplasm between organelle profiles


def _random_in_disc(rng: np.random.Generator, radius: float, n: int | None = None) -> np.ndarray:
    """Uniform random point(s) in a disc of ``radius`` centred on 0, shape (2,) or (n, 2)."""
    r = radius * np.sqrt(rng.uniform(size=n))
    a = rng.uniform(0.0, 2 * math.pi, size=n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=-1)



# ----------------------------------------------------------------------------- primitives


def _cover(signed_distance: np.ndarray, pitch: float) -> np.ndarray:
    """Fraction of a pixel box of width ``pitch`` inside ``{d < 0}`` (straight-edge approx.)."""
    return np.clip(0.5 - signed_distance / pitch, 0.0, 1.0)


def _band(x: np.ndarray, low: float | np.ndarray, high: float | np.ndarray,
          pitch: float) -> np.ndarray:
    """Fraction of the pixel box ``[x - pitch/2, x + pitch/2]`` inside ``[low, high]``."""
    half = pitch / 2
    return np.clip((np.minimum(x + half, high) - np.maximum(x - half, low)) / pitch, 0.0, 1.0)


def _stripes(phase: np.ndarray, duty: float, pixels_per_period: float) -> np.ndarray:
    """Anti-aliased periodic stripes: 1 on a fraction ``duty`` of each period, else 0."""
    position = np.abs(np.mod(phase / (2 * math.pi) + 0.5, 1.0) - 0.5)  # 0 … 0.5 periods
    blur = max(1.0 / pixels_per_period, 1e-3)
    return np.clip((duty / 2 - position) / blur + 0.5, 0.0, 1.0)


def _mix(base: np.ndarray, value: np.ndarray | float, weight: np.ndarray) -> np.ndarray:
    """``base`` overlaid by ``value`` with opacity ``weight``."""
    return base + (value - base) * weight


class _Texture:
    """Smooth stationary Gaussian random field of unit variance, defined on the whole plane.

    Sum of two periodic lattices with incommensurate periods and random orientations, each
    white noise smoothed by a Gaussian of ``scale_um``; sampled bilinearly at any point.
    """

    def __init__(self, rng: np.random.Generator, scale_um: float, size: int = 256) -> None:
        self.pitch = scale_um / 2.5
        self.tiles = []
        for n in (size, int(size * 1.37) | 1):
            lattice = ndimage.gaussian_filter(
                rng.standard_normal((n, n)), scale_um / self.pitch, mode="wrap")
            lattice = (lattice - lattice.mean()) / lattice.std()
            angle = rng.uniform(0.0, 2 * math.pi)
            rotation = np.array([[math.cos(angle), math.sin(angle)],
                                 [-math.sin(angle), math.cos(angle)]]) / self.pitch
            self.tiles.append((lattice.astype(np.float32), rotation, rng.uniform(0, n, 2)))

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        """Field values (float64) at points ``xy`` (µm, shape (N, 2))."""
        out = np.zeros(len(xy))
        for lattice, rotation, offset in self.tiles:
            uv = xy @ rotation.T + offset
            out += ndimage.map_coordinates(lattice, [uv[:, 1], uv[:, 0]], order=1,
                                           mode="grid-wrap")
        return out / math.sqrt(len(self.tiles))



@dataclass
class _Textures:
    """All random fields of a section (deterministic functions of local µm)."""

    warp_x: _Texture
    warp_y: _Texture
    fine: _Texture  # ~20 nm granularity of cytoplasm and nucleoplasm
    het_band: _Texture
    het_patch: _Texture
    rer_bend: _Texture
    rer_patch: _Texture
    wobble: _Texture  # ~80 nm irregularity of membranes inside organelles
    fibrils: _Texture

    @classmethod
    def make(cls, rng: np.random.Generator, params: SimulationParams) -> _Textures:
        """Draw every texture from ``rng``."""
        return cls(
            warp_x=_Texture(rng, params.membrane_waviness_length_um),
            warp_y=_Texture(rng, params.membrane_waviness_length_um),
            fine=_Texture(rng, 0.015),
            het_band=_Texture(rng, 0.1),
            het_patch=_Texture(rng, 0.07),
            rer_bend=_Texture(rng, 0.6),
            rer_patch=_Texture(rng, 1.0),
            wobble=_Texture(rng, 0.08),
            fibrils=_Texture(rng, 0.03),
        )



@dataclass
class _Warp:
    """Smooth displacement that makes membranes and nuclei wavy (local µm → warped µm)."""

    textures: _Textures
    amplitude: float

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.amplitude == 0:
            return p
        shift = np.column_stack([self.textures.warp_x(p), self.textures.warp_y(p)])
        return p + self.amplitude * shift



def _lognormal_factor(z: np.ndarray, cv: float) -> np.ndarray:
    """Lognormal factors of mean 1 and coefficient of variation ``cv`` from standard normals
    ``z`` (exactly 1 for ``cv = 0``)."""
    sigma = math.sqrt(math.log1p(cv * cv))
    return np.exp(sigma * z - sigma * sigma / 2)


