"""Simulate one serial section of rat pancreas as an integrated light + electron microscope sees it.

The simulator is the ground truth of the whole workflow: registration error, Pearson
correlation and the noise ceiling are all checked against it. It produces arrays and
metadata only; writing Odemis files is done elsewhere.

Model, in short:

- **Tissue** is a deterministic function of the stage position (µm), so the SEM grid and the
  larger, rotated FM grid sample the very same section. Cells are Voronoi cells of seed
  points in a smoothly warped frame (wavy membranes). The exocrine part is made of acini:
  rings of pyramidal acinar cells around a small lumen, with zymogen granules apically and
  rough ER (RER) lamellae basally around a basal nucleus. An islet of Langerhans (wavy
  round boundary crossing the SEM field, thin extracellular capsule) holds beta cells
  (insulin granules: dense core with a pale halo) and, mostly in the mantle, alpha cells
  (glucagon granules: smaller, dense, no halo). Nuclei are ellipses with peripheral and
  patchy heterochromatin and a nucleolus; mitochondria are ellipses with cristae. Each
  section profile is a random plane through 3-D objects, so nuclei, nucleoli, granules and
  insulin cores appear at random sizes or not at all.
- **SEM (backscattered electrons)**: heavy-metal stain density (0 = resin … 1) is mapped
  linearly to ADU, box-integrated over the pixel and blurred by the beam (Gaussian, nm).
  Noise: std ∝ 1/√(dwell time), partly signal dependent (shot noise), neighbouring pixels
  correlated (white noise filtered by a 3-tap kernel per axis with an exact lag-1
  correlation), rounded to uint16 within ``SignificantBits``.
- **FM (widefield)**: fluorophore densities rendered at ≤ 25 nm in the TRUE FM frame,
  blurred by a Gaussian PSF (σ = 0.21 λ_em / NA, widened in quadrature by the section's
  random defocus), integrated into camera pixels, scaled by the (vignetted, off-centre)
  illumination profile and the section's per-channel brightness, then Poisson
  photo-electron noise, gain, offset and read noise. Hoechst = DNA (heterochromatin denser)
  × a per-nucleus staining factor + aspecific RNA binding (exocrine RER) + bleed-through of
  the Alexa 594 signal; Insulin = insulin granule cores of beta cells × per-cell and
  per-granule labelling factors + a little non-specific binding; both channels add tissue
  autofluorescence (zymogen granules brighter) and a uniform background. Labelling factors
  are invisible in the SEM; photon numbers are those of ~100 nm sections, so the noise
  ceiling PCC(fm, fm_clean) is ~0.8-0.95, not ~1.
- **Randomness**: per section, ``SeedSequence([seed, index])`` spawns independent
  generators by role (geometry, tissue, SEM noise, FM noise, labelling, FM acquisition):
  FM parameters never change the tissue nor the SEM image.

Conventions (stage metres, Y up, pixel centres at integers, CCW rotation) are those of
:mod:`em2fm.geometry`: pixel ``(row, col)`` of an image with geometry ``g`` samples the
tissue at ``g.pixel_to_stage() @ (col, row, 1)``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, special
from scipy.spatial import cKDTree

from . import io
from .geometry import ImageGeometry, moving_to_fixed_px
from .odemis import Channel, OdemisImage, write_file, write_per_stream

log = logging.getLogger(__name__)

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
_PSF_SIGMA_PER_WAVELENGTH = 0.21  # Gaussian approximation of the widefield Airy PSF


def _param(
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
) -> Any:
    """A dataclass field with a documented unit and bounds (used for validation and schema)."""
    meta: dict[str, Any] = {"doc": doc}
    for key, value in (
        ("minimum", minimum),
        ("maximum", maximum),
        ("exclusiveMinimum", exclusive_minimum),
    ):
        if value is not None:
            meta[key] = value
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SimulationParams:
    """Physical parameters of the simulated sections (the ``simulate:`` config mapping).

    Every field carries its unit in its name or description; see :meth:`json_schema`.
    """

    # --- stage and fields of view
    section_stage_x0_mm: float = _param(
        1.0, "Stage X of the SEM field centre of section 0 (mm).")
    section_stage_y_mm: float = _param(6.3, "Stage Y of every SEM field centre (mm).")
    section_stage_pitch_mm: float = _param(
        0.25, "Stage X step between consecutive sections (mm).")
    em_size_px: int = _param(2560, "SEM field side (px, square).", minimum=64, maximum=8192)
    em_pixel_size_nm: float = _param(
        10.0, "SEM pixel size (nm).", minimum=1.0, maximum=100.0)
    fm_size_px: int = _param(
        384, "FM field side (px, square).", minimum=16, maximum=4096)
    fm_pixel_size_nm: float = _param(
        106.4, "FM camera pixel size at the sample (nm).", minimum=20.0, maximum=1000.0)
    fm_render_pitch_max_nm: float = _param(
        25.0, "Largest sampling pitch at which FM fluorophore density is rendered (nm).",
        minimum=2.0, maximum=50.0)
    fm_rotation_deg: float = _param(
        6.6, "Mean true FM rotation relative to the SEM (degrees, counter-clockwise).",
        minimum=-180.0, maximum=180.0)
    fm_rotation_jitter_deg: float = _param(
        0.5, "Per-section true FM rotation jitter, uniform ± (degrees).",
        minimum=0.0, maximum=10.0)
    fm_centre_offset_max_um: float = _param(
        2.0, "Largest true offset of the FM field centre from the SEM field centre (µm).",
        minimum=0.0)
    fm_meta_shift_min_um: float = _param(
        0.3, "Smallest error of the FM centre written to metadata (µm).", minimum=0.0)
    fm_meta_shift_max_um: float = _param(
        1.0, "Largest error of the FM centre written to metadata (µm); the magnitude is "
        "uniform in [min, max], the direction uniform.", minimum=0.0)
    fm_meta_rotation_error_max_deg: float = _param(
        0.3, "Largest error of the FM rotation written to metadata, uniform ± (degrees).",
        minimum=0.0, maximum=10.0)

    # --- tissue architecture
    acinar_cell_size_um: float = _param(
        12.0, "Acinar cell height, basal to apical (µm).", minimum=4.0, maximum=30.0)
    acinar_lumen_radius_um: float = _param(
        0.8, "Mean radius of an acinar lumen profile (µm).", minimum=0.0, maximum=5.0)
    acinar_lumen_probability: float = _param(
        0.6, "Probability that the section cuts an acinus through its lumen.",
        minimum=0.0, maximum=1.0)
    interacinar_gap_um: float = _param(
        0.15, "Width of the interstitial space between acini (µm).", minimum=0.0, maximum=5.0)
    endocrine_cell_size_um: float = _param(
        9.0, "Endocrine (islet) cell diameter (µm).", minimum=4.0, maximum=20.0)
    islet_radius_min_um: float = _param(
        40.0, "Smallest mean islet radius (µm).", minimum=10.0)
    islet_radius_max_um: float = _param(
        120.0, "Largest mean islet radius (µm).", minimum=10.0)
    islet_boundary_offset_max_frac: float = _param(
        0.25, "Largest distance of the islet boundary from the SEM field centre, as a "
        "fraction of the SEM field width.", minimum=0.0, maximum=0.4)
    islet_capsule_gap_um: float = _param(
        0.4, "Width of the extracellular capsule between islet and exocrine cells (µm).",
        minimum=0.0, maximum=5.0)
    islet_mantle_width_um: float = _param(
        15.0, "Width of the islet mantle where alpha cells concentrate (µm).", minimum=0.0)
    alpha_fraction_mantle: float = _param(
        0.45, "Fraction of alpha cells among mantle endocrine cells.",
        minimum=0.0, maximum=1.0)
    alpha_fraction_core: float = _param(
        0.05, "Fraction of alpha cells among islet core endocrine cells.",
        minimum=0.0, maximum=1.0)
    membrane_waviness_um: float = _param(
        0.3, "RMS displacement of the smooth warp that makes membranes wavy (µm).",
        minimum=0.0, maximum=2.0)
    membrane_waviness_length_um: float = _param(
        2.5, "Smoothing length of the membrane warp (µm).", minimum=0.2, maximum=20.0)
    plasma_membrane_thickness_nm: float = _param(
        9.0, "Stained thickness of one plasma membrane (nm).", minimum=1.0, maximum=50.0)
    nucleus_diameter_acinar_um: float = _param(
        6.5, "Acinar nucleus diameter (µm, 3-D; profiles are random sections).",
        minimum=1.0, maximum=20.0)
    nucleus_diameter_endocrine_um: float = _param(
        5.5, "Endocrine nucleus diameter (µm, 3-D).", minimum=1.0, maximum=20.0)
    nucleus_aspect_max: float = _param(
        1.4, "Largest axis ratio of nuclear profiles.", minimum=1.0, maximum=3.0)
    heterochromatin_band_um: float = _param(
        0.1, "Mean thickness of the peripheral heterochromatin along the envelope (µm).",
        minimum=0.0, maximum=1.0)
    heterochromatin_patch_fraction: float = _param(
        0.12, "Mean area fraction of interior heterochromatin patches.",
        minimum=0.0, maximum=0.9)
    nucleolus_probability: float = _param(
        0.6, "Probability that a nuclear profile shows a nucleolus.", minimum=0.0, maximum=1.0)
    nucleolus_diameter_acinar_um: float = _param(
        1.8, "Acinar nucleolus diameter (µm).", minimum=0.1, maximum=5.0)
    nucleolus_diameter_endocrine_um: float = _param(
        1.1, "Endocrine nucleolus diameter (µm).", minimum=0.1, maximum=5.0)
    rer_lamella_period_nm: float = _param(
        110.0, "Spacing of the stacked rough-ER cisternae (nm).", minimum=30.0, maximum=500.0)
    rer_zone_start_frac: float = _param(
        0.55, "RER starts at this fraction of the lumen-to-nucleus distance of acinar cells.",
        minimum=0.0, maximum=1.5)
    zymogen_zone_frac: float = _param(
        0.7, "Zymogen granules lie within this fraction of the lumen-to-nucleus distance.",
        minimum=0.1, maximum=1.5)
    zymogen_diameter_um: float = _param(
        0.9, "Zymogen granule diameter (µm, 3-D).", minimum=0.1, maximum=3.0)
    zymogen_area_fraction: float = _param(
        0.45, "Area fraction of zymogen granules in the apical cytoplasm.",
        minimum=0.0, maximum=0.55)
    insulin_granule_diameter_nm: float = _param(
        300.0, "Insulin granule diameter including its halo (nm, 3-D).",
        minimum=50.0, maximum=1000.0)
    insulin_core_fraction: float = _param(
        0.6, "Insulin dense-core diameter / granule diameter.", minimum=0.1, maximum=0.95)
    insulin_granule_area_fraction: float = _param(
        0.25, "Area fraction of insulin granules in beta cell cytoplasm.",
        minimum=0.0, maximum=0.5)
    glucagon_granule_diameter_nm: float = _param(
        230.0, "Glucagon granule diameter (nm, 3-D).", minimum=50.0, maximum=1000.0)
    glucagon_core_fraction: float = _param(
        0.88, "Glucagon dense-core diameter / granule diameter (thin rim, no halo).",
        minimum=0.1, maximum=1.0)
    glucagon_granule_area_fraction: float = _param(
        0.28, "Area fraction of glucagon granules in alpha cell cytoplasm.",
        minimum=0.0, maximum=0.5)
    granule_size_cv: float = _param(
        0.15, "Coefficient of variation of 3-D granule diameters.", minimum=0.0, maximum=0.5)
    mitochondrion_width_nm: float = _param(
        320.0, "Mitochondrion width (nm).", minimum=50.0, maximum=2000.0)
    mitochondrion_area_fraction: float = _param(
        0.06, "Area fraction of mitochondria in the cytoplasm.", minimum=0.0, maximum=0.3)
    mitochondrion_crista_period_nm: float = _param(
        80.0, "Spacing of mitochondrial cristae (nm).", minimum=20.0, maximum=500.0)

    # --- SEM
    em_dwell_time_s: float = _param(
        3.0e-6, "SEM dwell time per pixel (s).", exclusive_minimum=0.0)
    em_voltage_v: float = _param(
        3000.0, "SEM acceleration voltage (V, metadata).", exclusive_minimum=0.0)
    em_current_a: float = _param(
        1.0e-10, "SEM probe current (A, metadata).", exclusive_minimum=0.0)
    em_noise_std_ref_adu: float = _param(
        4500.0, "SEM noise standard deviation at the reference dwell time and mid-contrast "
        "signal (ADU).", minimum=0.0)
    em_noise_ref_dwell_s: float = _param(
        1.0e-6, "Dwell time at which em_noise_std_ref_adu holds (s).", exclusive_minimum=0.0)
    em_noise_correlation: float = _param(
        0.25, "Lag-1 correlation of SEM noise between neighbouring pixels (x and y).",
        minimum=0.0, maximum=0.7)
    em_shot_noise_fraction: float = _param(
        0.5, "Fraction of the noise variance at mid-contrast that scales with the signal "
        "(shot noise); the rest is signal independent.", minimum=0.0, maximum=1.0)
    em_beam_sigma_nm: float = _param(
        3.0, "Gaussian sigma of the beam / interaction spot (nm).", minimum=0.0, maximum=100.0)
    em_black_level_adu: float = _param(
        2000.0, "SEM signal without any backscattered electrons (ADU).", minimum=0.0)
    em_resin_level_adu: float = _param(
        13000.0, "SEM signal of unstained resin (ADU).", minimum=0.0)
    em_stain_level_adu: float = _param(
        43000.0, "SEM signal of the densest stained structure, stain density 1 (ADU).",
        minimum=0.0)
    em_significant_bits: int = _param(
        16, "Bit depth of the SEM data (SignificantBits).", minimum=8, maximum=16)
    em_invert: bool = _param(
        False, "Record inverted contrast (stained structures dark), as some labs do.")

    # --- FM
    hoechst_channel_name: str = _param("Hoechst", "Name of the DNA channel.")
    hoechst_excitation_nm: float = _param(
        405.0, "Hoechst excitation wavelength (nm).", minimum=200.0, maximum=1200.0)
    hoechst_emission_nm: float = _param(
        450.0, "Hoechst emission wavelength (nm).", minimum=200.0, maximum=1200.0)
    insulin_channel_name: str = _param("Insulin", "Name of the anti-insulin channel.")
    insulin_excitation_nm: float = _param(
        590.0, "Alexa 594 excitation wavelength (nm).", minimum=200.0, maximum=1200.0)
    insulin_emission_nm: float = _param(
        617.0, "Alexa 594 emission wavelength (nm).", minimum=200.0, maximum=1200.0)
    fm_numerical_aperture: float = _param(
        0.95, "Objective numerical aperture.", exclusive_minimum=0.0, maximum=1.5)
    hoechst_photons_e: float = _param(
        16.0, "Hoechst photo-electrons per FM pixel entirely covered by euchromatin (DNA "
        "density 1), at the illumination maximum, in focus, for a nucleus and section of "
        "mean staining. A ~100 nm resin section holds ~1/50 of the DNA a widefield image of "
        "a whole cell collects, and Hoechst on resin is dim: a few tens of photo-electrons "
        "(the default puts the Hoechst noise ceiling PCC(fm, fm_clean) at ~0.78-0.88).",
        minimum=0.0)
    heterochromatin_dna_ratio: float = _param(
        2.5, "DNA density of heterochromatin relative to euchromatin.", minimum=0.0)
    nucleolus_dna_ratio: float = _param(
        0.3, "DNA density of the nucleolus relative to euchromatin.", minimum=0.0)
    hoechst_nucleus_cv: float = _param(
        0.3, "Coefficient of variation (dimensionless) of a per-nucleus Hoechst staining "
        "factor (lognormal, mean 1) that multiplies the DNA density of each nucleus. "
        "Post-embedding Hoechst staining of resin sections depends on how much chromatin "
        "the section surface exposes and on local resin penetration, which the SEM does "
        "not show; 0 disables it.", minimum=0.0, maximum=2.0)
    hoechst_rna_fraction: float = _param(
        0.25, "Aspecific Hoechst signal of rough-ER RNA relative to euchromatin DNA.",
        minimum=0.0)
    hoechst_bleed_through: float = _param(
        0.03, "Fraction of the Alexa 594 (insulin) specific photo-electrons that also "
        "appear in the Hoechst channel (before that channel's section brightness factor).",
        minimum=0.0, maximum=1.0)
    hoechst_autofluorescence_e: float = _param(
        1.5, "Tissue autofluorescence in the Hoechst channel (photo-electrons per FM pixel "
        "entirely covered by cytoplasm or nucleoplasm, at the illumination maximum). "
        "Fixed, resin-embedded tissue autofluoresces broadly and most under violet "
        "excitation (flavins, fixative adducts); zymogen granules more, see "
        "zymogen_autofluorescence_ratio. Not part of fm_specific.", minimum=0.0)
    hoechst_background_e: float = _param(
        6.0, "Uniform background in the Hoechst channel (photo-electrons per pixel at the "
        "illumination maximum): resin, mounting medium and out-of-section fluorescence, "
        "excited by the same (vignetted) illumination.", minimum=0.0)
    insulin_photons_e: float = _param(
        220.0, "Alexa 594 photo-electrons per FM pixel entirely covered by insulin cores, at "
        "the illumination maximum, in focus, for a granule, cell and section of mean "
        "labelling. Post-embedding immunolabelling of a ~100 nm section binds only "
        "epitopes exposed at its surface, a few antibodies per core: the default puts the "
        "insulin noise ceiling PCC(fm, fm_clean) at ~0.8-0.95, depending on how much islet "
        "the field holds.", minimum=0.0)
    insulin_cell_cv: float = _param(
        0.35, "Coefficient of variation (dimensionless) of a per-beta-cell insulin labelling "
        "factor (lognormal, mean 1): insulin content and epitope exposure differ between "
        "beta cells (degranulation, section depth) beyond what the granule profiles show; "
        "0 disables it.", minimum=0.0, maximum=2.0)
    insulin_granule_cv: float = _param(
        0.5, "Coefficient of variation (dimensionless) of a per-granule insulin labelling "
        "factor (lognormal, mean 1): the number of antibodies bound to the part of each "
        "dense core exposed at the section surface is small and random (Poisson-like); "
        "0 disables it.", minimum=0.0, maximum=2.0)
    insulin_nonspecific_fraction: float = _param(
        0.01, "Non-specific anti-insulin binding on any tissue, relative to insulin cores.",
        minimum=0.0, maximum=1.0)
    insulin_autofluorescence_e: float = _param(
        1.0, "Tissue autofluorescence in the insulin (Alexa 594) channel (photo-electrons "
        "per FM pixel entirely covered by cytoplasm or nucleoplasm, at the illumination "
        "maximum); weaker than under violet excitation. Not part of fm_specific.",
        minimum=0.0)
    zymogen_autofluorescence_ratio: float = _param(
        3.0, "Autofluorescence of zymogen granules relative to the rest of the tissue (both "
        "channels; dimensionless). Pancreatic zymogen granules are known to autofluoresce "
        "brighter than the cytoplasm.", minimum=0.0, maximum=50.0)
    insulin_background_e: float = _param(
        8.0, "Uniform background in the insulin channel (photo-electrons per pixel at the "
        "illumination maximum): resin, mounting medium and out-of-section fluorescence.",
        minimum=0.0)
    fm_vignetting_corner_ratio: float = _param(
        0.7, "Widefield illumination at a corner of the FM field relative to its maximum, "
        "when the illumination is centred (dimensionless, 1 = flat). The profile is a "
        "Gaussian falloff exp(ln(ratio) r² / R²), r the distance from the illumination "
        "centre, R the FM field half-diagonal; it scales every fluorescence signal "
        "(fm_specific included), not the camera offset. Uncorrected widefield images "
        "typically lose 20-40 % towards the corners.",
        exclusive_minimum=0.0, maximum=1.0)
    fm_illumination_offset_max_frac: float = _param(
        0.3, "Largest distance of the illumination centre from the FM field centre, as a "
        "fraction of the FM field half-width (uniform in the disc; per section, since the "
        "lamp / fibre alignment drifts).", minimum=0.0, maximum=1.0)
    fm_section_brightness_cv: float = _param(
        0.2, "Coefficient of variation (dimensionless) of a per-section, per-channel "
        "brightness factor (lognormal, mean 1) that scales all fluorescence of that "
        "channel (fm_specific included): staining intensity, lamp power and exposure drift "
        "from section to section; 0 disables it.", minimum=0.0, maximum=1.0)
    fm_defocus_sigma_max_nm: float = _param(
        60.0, "Largest extra Gaussian blur sigma from defocus (nm). Thin sections on the "
        "SECOM are not all in one focal plane: per section, a sigma uniform in [0, max] "
        "is added in quadrature to the PSF sigma of both channels (fm_specific included).",
        minimum=0.0, maximum=1000.0)
    fm_camera_offset_adu: float = _param(
        100.0, "Camera offset (ADU).", minimum=0.0)
    fm_gain_adu_per_e: float = _param(
        2.0, "Camera gain (ADU per photo-electron).", exclusive_minimum=0.0)
    fm_read_noise_e: float = _param(
        1.6, "Camera read noise (photo-electrons RMS).", minimum=0.0)
    fm_significant_bits: int = _param(
        16, "Bit depth of the camera data (SignificantBits).", minimum=8, maximum=16)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _checked_value(f.name, getattr(self, f.name), f.default, f.metadata)
            object.__setattr__(self, f.name, value)
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Cross-field checks; raises ValueError."""
        pairs = (
            ("fm_meta_shift_min_um", "fm_meta_shift_max_um"),
            ("islet_radius_min_um", "islet_radius_max_um"),
            ("em_black_level_adu", "em_resin_level_adu"),
            ("em_resin_level_adu", "em_stain_level_adu"),
        )
        for low, high in pairs:
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"simulate: {low} must not exceed {high}")
        if self.em_stain_level_adu > 2**self.em_significant_bits - 1:
            raise ValueError("simulate: em_stain_level_adu exceeds em_significant_bits")
        if self.fm_field_um / 2 <= self.em_reach_in_fm_um:
            raise ValueError(
                f"simulate: the FM field ({self.fm_field_um:.1f} µm) cannot hold the SEM field "
                f"(needs > {2 * self.em_reach_in_fm_um:.1f} µm with the configured rotation "
                "and offsets); raise fm_size_px or lower em_size_px"
            )

    @property
    def em_field_um(self) -> float:
        """SEM field width (µm)."""
        return self.em_size_px * self.em_pixel_size_nm * 1e-3

    @property
    def fm_field_um(self) -> float:
        """FM field width (µm)."""
        return self.fm_size_px * self.fm_pixel_size_nm * 1e-3

    @property
    def em_reach_in_fm_um(self) -> float:
        """Largest distance from the FM centre reached by the SEM field along an FM axis (µm)."""
        angles = np.radians(self.fm_rotation_deg + np.linspace(-1, 1, 65)
                            * self.fm_rotation_jitter_deg)
        spread = float(np.max(np.abs(np.cos(angles)) + np.abs(np.sin(angles))))
        return self.em_field_um / 2 * spread + self.fm_centre_offset_max_um

    @property
    def channels(self) -> list[tuple[str, float, float]]:
        """``(name, excitation_nm, emission_nm)`` of the FM channels, Hoechst first."""
        return [
            (self.hoechst_channel_name, self.hoechst_excitation_nm, self.hoechst_emission_nm),
            (self.insulin_channel_name, self.insulin_excitation_nm, self.insulin_emission_nm),
        ]

    @classmethod
    def from_config(cls, cfg: dict | None) -> SimulationParams:
        """Build from the simulator's config mapping; missing keys take defaults.

        ``cfg`` is the physics mapping of config.yaml (``simulate: params:``, validated by
        ``schemas/simulate.schema.yaml``); ``None`` means all defaults.

        Raises:
            ValueError: on an unknown key (named in the message) or an invalid value.
        """
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"simulate: unknown parameter(s): {', '.join(unknown)}")
        return cls(**cfg)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON schema (draft 2020-12) of the ``simulate:`` mapping, defaults included."""
        type_names = {bool: "boolean", int: "integer", float: "number", str: "string"}
        props: dict[str, Any] = {}
        for f in fields(cls):
            entry: dict[str, Any] = {
                "type": type_names[type(f.default)],
                "default": f.default,
                "description": f.metadata["doc"],
            }
            for key in ("minimum", "maximum", "exclusiveMinimum"):
                if key in f.metadata:
                    entry[key] = f.metadata[key]
            props[f.name] = entry
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "simulate",
            "description": "Physical parameters of the simulated sections (em2fm.simulate).",
            "type": "object",
            "additionalProperties": False,
            "properties": props,
        }


def _checked_value(name: str, value: Any, default: Any, meta: Any) -> Any:
    """Type- and range-check one parameter; ints are accepted for float fields."""
    kind = type(default)
    if kind is bool:
        ok = isinstance(value, (bool, np.bool_))
        value = bool(value) if ok else value
    elif kind is int:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        value = int(value) if ok else value
    elif kind is float:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, bool)
        value = float(value) if ok else value
        ok = ok and math.isfinite(value)
    else:
        ok = isinstance(value, str) and value != ""
    if not ok:
        raise ValueError(f"simulate: {name} must be a {kind.__name__}, got {value!r}")
    if kind in (int, float):
        if "minimum" in meta and value < meta["minimum"]:
            raise ValueError(f"simulate: {name} = {value} is below {meta['minimum']}")
        if "maximum" in meta and value > meta["maximum"]:
            raise ValueError(f"simulate: {name} = {value} is above {meta['maximum']}")
        if "exclusiveMinimum" in meta and value <= meta["exclusiveMinimum"]:
            raise ValueError(f"simulate: {name} = {value} must exceed {meta['exclusiveMinimum']}")
    return value


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
        fm_geometry_true: true FM placement.
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


def _random_in_disc(rng: np.random.Generator, radius: float, n: int | None = None) -> np.ndarray:
    """Uniform random point(s) in a disc of ``radius`` centred on 0, shape (2,) or (n, 2)."""
    r = radius * np.sqrt(rng.uniform(size=n))
    a = rng.uniform(0.0, 2 * math.pi, size=n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=-1)


def _fm_geometries(
    params: SimulationParams, em: ImageGeometry, rng: np.random.Generator
) -> tuple[ImageGeometry, ImageGeometry]:
    """True and metadata FM placements (true rotation jittered, metadata off by stage error)."""
    rotation = math.radians(
        params.fm_rotation_deg + rng.uniform(-1.0, 1.0) * params.fm_rotation_jitter_deg)
    centre = np.asarray(em.centre_m) + _random_in_disc(rng, params.fm_centre_offset_max_um) * 1e-6
    pixel = params.fm_pixel_size_nm * 1e-9
    shape = (params.fm_size_px, params.fm_size_px)
    true = ImageGeometry(shape, (pixel, pixel), (float(centre[0]), float(centre[1])),
                         rotation % (2 * math.pi))
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
    return true, meta


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


# ----------------------------------------------------------------------------- tissue layout


@dataclass
class _Islet:
    """Islet of Langerhans: a wavy disc (local µm)."""

    centre: np.ndarray
    radius: float
    harmonics: np.ndarray  # (K, 3): order, relative amplitude, phase

    def boundary_radius(self, theta: np.ndarray) -> np.ndarray:
        """Boundary radius (µm) in direction ``theta`` (rad)."""
        wave = np.zeros_like(theta)
        for order, amplitude, phase in self.harmonics:
            wave += amplitude * np.cos(order * theta + phase)
        return self.radius * (1.0 + wave)

    def depth(self, xy: np.ndarray) -> np.ndarray:
        """Approximate distance inside the islet boundary (µm; negative outside)."""
        d = xy - self.centre
        return self.boundary_radius(np.arctan2(d[:, 1], d[:, 0])) - np.hypot(d[:, 0], d[:, 1])


@dataclass
class _Cells:
    """Voronoi cells (local µm, warped frame) with their nucleus and nucleolus profiles."""

    seeds: np.ndarray  # (N, 2)
    kind: np.ndarray  # (N,) _ACINAR / _BETA / _ALPHA
    group: np.ndarray  # (N,) acinus id; -1 for islet cells
    apex: np.ndarray  # (N, 2) acinus centre (lumen) of acinar cells; the seed otherwise
    apex_reach: np.ndarray  # (N,) lumen-to-nucleus distance of acinar cells (µm)
    lumen_radius: np.ndarray  # (N,) lumen profile radius, 0 without lumen (µm)
    nuc_centre: np.ndarray  # (N, 2)
    nuc_axes: np.ndarray  # (N, 2) semi-axes a, b (µm); 0 without nucleus
    nuc_angle: np.ndarray  # (N,) rad
    het_fraction: np.ndarray  # (N,) interior heterochromatin area fraction
    nl_centre: np.ndarray  # (N, 2)
    nl_radius: np.ndarray  # (N,) µm, 0 without nucleolus
    gap_between_acini: float  # µm, full width
    gap_capsule: float  # µm, full width
    tree: cKDTree = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tree = cKDTree(self.seeds)

    def half_gap(self, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
        """Half width of the extracellular space between cells ``i1`` and ``i2`` (µm)."""
        g1, g2 = self.group[i1], self.group[i2]
        exocrine = (g1 >= 0) & (g2 >= 0)
        gap = np.where(exocrine, self.gap_between_acini, self.gap_capsule)
        return np.where(g1 == g2, 0.0, gap / 2)

    def membrane_distance(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Owner cell, second-nearest cell and distance to their bisector (µm) at ``q``."""
        d, idx = self.tree.query(q, k=2)
        i1, i2 = idx[:, 0], idx[:, 1]
        separation = np.linalg.norm(self.seeds[i2] - self.seeds[i1], axis=1)
        dm = (d[:, 1] ** 2 - d[:, 0] ** 2) / (2 * np.maximum(separation, 1e-9))
        return i1, i2, dm

    def nucleus_distance(self, q: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Approximate signed distance (µm) to the owner's nuclear envelope (< 0 inside)."""
        axes = self.nuc_axes[owner]
        has = axes[:, 0] > 0
        out = np.full(len(q), _FAR)
        if not has.any():
            return out
        d = q[has] - self.nuc_centre[owner[has]]
        c, s = np.cos(self.nuc_angle[owner[has]]), np.sin(self.nuc_angle[owner[has]])
        u, v = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        a, b = axes[has, 0], axes[has, 1]
        f = (u / a) ** 2 + (v / b) ** 2 - 1.0
        grad = 2.0 * np.hypot(u / a**2, v / b**2)
        out[has] = np.maximum(f / np.maximum(grad, 1e-9), -2 * np.maximum(a, b))
        return out


@dataclass
class _Organelles:
    """Granule and mitochondrion profiles (local µm, unwarped frame: round granules)."""

    kind: np.ndarray  # (M,) _ZYMOGEN / _INSULIN / _GLUCAGON / _MITO
    centre: np.ndarray  # (M, 2)
    radius: np.ndarray  # (M,) profile radius; semi-major axis for mitochondria
    core_radius: np.ndarray  # (M,) dense-core radius (0: the section misses the core)
    core_offset: np.ndarray  # (M, 2) core centre relative to the centre
    minor: np.ndarray  # (M,) semi-minor axis of mitochondria
    angle: np.ndarray  # (M,) long-axis angle of mitochondria (rad)
    level: np.ndarray  # (M,) stain density of the dense core
    phase: np.ndarray  # (M,) crista phase (rad)
    lift: float = field(init=False, default=0.0)
    tree: cKDTree | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        # Power-distance trick: with centres lifted to z = sqrt(R² - r²), the nearest lifted
        # centre to (x, y, 0) is the disc of smallest power distance |p - c|² - r², i.e. the
        # (non-overlapping) disc that contains the point.
        if len(self.radius):
            self.lift = float(self.radius.max())
            z = np.sqrt(self.lift**2 - self.radius**2)
            self.tree = cKDTree(np.column_stack([self.centre, z]))

    def nearest(self, q: np.ndarray, reach: float) -> np.ndarray:
        """Index of the profile containing ``q`` or within ``reach`` µm of it; -1 elsewhere."""
        if self.tree is None:
            return np.full(len(q), -1)
        lifted = np.column_stack([q, np.zeros(len(q))])
        _, idx = self.tree.query(lifted, k=1, distance_upper_bound=self.lift + reach)
        return np.where(idx < len(self.kind), idx, -1)


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


def _jittered_hex(rng: np.random.Generator, low: np.ndarray, high: np.ndarray,
                  spacing: float, jitter: float) -> np.ndarray:
    """Hexagonal lattice of ``spacing`` µm over a box, randomly shifted and jittered (µm)."""
    dy = spacing * math.sqrt(3) / 2
    ys = np.arange(low[1] - spacing, high[1] + spacing, dy) + rng.uniform(0, dy)
    xs = np.arange(low[0] - spacing, high[0] + spacing, spacing) + rng.uniform(0, spacing)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + (np.arange(len(ys))[:, None] % 2) * spacing / 2
    points = np.column_stack([gx.ravel(), gy.ravel()])
    points += _random_in_disc(rng, jitter * spacing, len(points))
    inside = np.all((points >= low) & (points <= high), axis=1)
    return points[inside]


def _make_islet(rng: np.random.Generator, params: SimulationParams) -> _Islet:
    """Islet whose boundary crosses the SEM field (centred on local 0) at a random place."""
    radius = rng.uniform(params.islet_radius_min_um, params.islet_radius_max_um)
    orders = np.arange(2, 6)
    harmonics = np.column_stack([
        orders, rng.uniform(0.0, 0.06, len(orders)) / orders * 2,
        rng.uniform(0.0, 2 * math.pi, len(orders)),
    ])
    islet = _Islet(np.zeros(2), radius, harmonics)
    phi = rng.uniform(0.0, 2 * math.pi)
    offset = rng.uniform(-1.0, 1.0) * params.islet_boundary_offset_max_frac * params.em_field_um
    reach = float(islet.boundary_radius(np.array([phi]))[0]) + offset
    islet.centre = -reach * np.array([math.cos(phi), math.sin(phi)])
    return islet


def _make_acini(rng: np.random.Generator, params: SimulationParams, low: np.ndarray,
                high: np.ndarray) -> dict[str, np.ndarray]:
    """Acinar cell seeds: rings of cells around acinus centres (lumina)."""
    size = params.acinar_cell_size_um
    centres = _jittered_hex(rng, low, high, 2.3 * size, 0.15)
    parts: dict[str, list[np.ndarray]] = {
        "seed": [np.zeros((0, 2))], "group": [np.zeros(0, int)], "apex": [np.zeros((0, 2))],
        "lumen": [np.zeros(0)]}
    for gid, centre in enumerate(centres):
        ring = 0.7 * size * rng.uniform(0.85, 1.15)
        n = max(4, round(2 * math.pi * ring / (0.75 * size)))
        angles = rng.uniform(0, 2 * math.pi) + (np.arange(n) + rng.uniform(-0.2, 0.2, n)) * (
            2 * math.pi / n)
        radii = ring * rng.uniform(0.9, 1.1, n)
        parts["seed"].append(centre + np.column_stack([np.cos(angles), np.sin(angles)])
                             * radii[:, None])
        parts["group"].append(np.full(n, gid))
        parts["apex"].append(np.tile(centre, (n, 1)))
        has_lumen = rng.uniform() < params.acinar_lumen_probability
        lumen = params.acinar_lumen_radius_um * rng.uniform(0.6, 1.4) * has_lumen
        parts["lumen"].append(np.full(n, lumen))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _make_cells(rng: np.random.Generator, params: SimulationParams, islet: _Islet,
                low: np.ndarray, high: np.ndarray) -> _Cells:
    """Exocrine and endocrine cell seeds, kinds and nuclei over the box ``low``–``high``."""
    acini = _make_acini(rng, params, low, high)
    margin = 0.25 * params.endocrine_cell_size_um
    keep = islet.depth(acini["seed"]) < -margin
    endo = _jittered_hex(rng, low, high, params.endocrine_cell_size_um, 0.2)
    endo_depth = islet.depth(endo)
    endo, endo_depth = endo[endo_depth > margin], endo_depth[endo_depth > margin]
    p_alpha = np.where(endo_depth < params.islet_mantle_width_um,
                       params.alpha_fraction_mantle, params.alpha_fraction_core)
    endo_kind = np.where(rng.uniform(size=len(endo)) < p_alpha, _ALPHA, _BETA)
    n_acinar = int(keep.sum())
    seeds = np.concatenate([acini["seed"][keep], endo])
    kind = np.concatenate([np.full(n_acinar, _ACINAR), endo_kind])
    apex = np.concatenate([acini["apex"][keep], endo])
    reach = np.linalg.norm(seeds - apex, axis=1)
    cells = _Cells(
        seeds=seeds,
        kind=kind,
        group=np.concatenate([acini["group"][keep], np.full(len(endo), -1)]),
        apex=apex,
        apex_reach=reach,
        lumen_radius=np.concatenate([acini["lumen"][keep], np.zeros(len(endo))]),
        nuc_centre=seeds.copy(),
        nuc_axes=np.zeros((len(seeds), 2)),
        nuc_angle=np.zeros(len(seeds)),
        het_fraction=np.zeros(len(seeds)),
        nl_centre=seeds.copy(),
        nl_radius=np.zeros(len(seeds)),
        gap_between_acini=params.interacinar_gap_um,
        gap_capsule=params.islet_capsule_gap_um,
    )
    _add_nuclei(rng, params, cells)
    return cells


def _clearance(cells: _Cells, points: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Distance (µm) from ``points`` to the nearest edge of their owner's Voronoi cell."""
    k = min(16, len(cells.seeds))
    _, neighbours = cells.tree.query(points, k=k)
    own = cells.seeds[owner][:, None, :]
    other = cells.seeds[neighbours]
    normal = other - own
    length = np.linalg.norm(normal, axis=2)
    midpoint = (own + other) / 2
    signed = np.einsum("nkd,nkd->nk", midpoint - points[:, None, :], normal) / np.maximum(
        length, 1e-9)
    signed[neighbours == owner[:, None]] = np.inf
    return signed.min(axis=1)


def _add_nuclei(rng: np.random.Generator, params: SimulationParams, cells: _Cells) -> None:
    """Nucleus and nucleolus profiles: random sections of spheres, fitted inside their cell."""
    n = len(cells.seeds)
    acinar = cells.kind == _ACINAR
    diameter = np.where(acinar, params.nucleus_diameter_acinar_um,
                        params.nucleus_diameter_endocrine_um) * rng.uniform(0.9, 1.1, n)
    cell_height = np.where(acinar, params.acinar_cell_size_um, params.endocrine_cell_size_um)
    height = rng.uniform(-0.5, 0.5, n) * cell_height  # section plane vs nucleus centre
    radius = np.sqrt(np.clip((diameter / 2) ** 2 - height**2, 0.0, None))
    outward = cells.seeds - cells.apex
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-9)
    centre = np.where(
        acinar[:, None],
        cells.seeds + outward * 0.12 * params.acinar_cell_size_um,
        cells.seeds + _random_in_disc(rng, 0.08 * params.endocrine_cell_size_um, n),
    )
    aspect = rng.uniform(1.0, params.nucleus_aspect_max, n)
    axes = radius[:, None] * np.column_stack([np.sqrt(aspect), 1 / np.sqrt(aspect)])
    room = _clearance(cells, centre, np.arange(n)) - 0.4
    axes *= np.clip(room / np.maximum(axes[:, 0], 1e-9), 0.0, 1.0)[:, None]
    axes[axes[:, 1] < 0.5] = 0.0  # tiny caps are invisible: no nucleus in this section
    cells.nuc_centre = centre
    cells.nuc_axes = axes
    cells.nuc_angle = rng.uniform(0, math.pi, n)
    cells.het_fraction = params.heterochromatin_patch_fraction * np.where(
        acinar, 0.6, 1.3) * rng.uniform(0.6, 1.4, n)
    nl_diameter = np.where(acinar, params.nucleolus_diameter_acinar_um,
                           params.nucleolus_diameter_endocrine_um)
    nl_radius = nl_diameter / 2 * rng.uniform(0.7, 1.2, n) * np.sqrt(
        1 - rng.uniform(0.0, 0.8, n) ** 2)
    nl_radius = np.minimum(nl_radius, 0.4 * axes[:, 1])
    nl_radius[rng.uniform(size=n) >= params.nucleolus_probability] = 0.0
    free = np.clip(axes[:, 1] - nl_radius - 0.3, 0.0, None)
    cells.nl_centre = centre + _random_in_disc(rng, 1.0, n) * free[:, None]
    cells.nl_radius = np.where(free > 0, nl_radius, 0.0)


# ----------------------------------------------------------------------------- organelles


@dataclass
class _OrganelleSpec:
    """How one organelle kind is drawn."""

    kind: int
    cell_kind: int
    area_fraction: float
    diameter_um: float  # 3-D diameter (granules) or width (mitochondria)
    core_fraction: float
    zone: str  # "apical", "basal" or "any"


def _organelle_specs(params: SimulationParams) -> list[_OrganelleSpec]:
    """Organelle kinds, mitochondria first (they are placed first)."""
    mito = params.mitochondrion_area_fraction
    width = params.mitochondrion_width_nm * 1e-3
    return [
        _OrganelleSpec(_MITO, _ACINAR, mito, width, 0.0, "basal"),
        _OrganelleSpec(_MITO, _BETA, mito, width, 0.0, "any"),
        _OrganelleSpec(_MITO, _ALPHA, mito, width, 0.0, "any"),
        _OrganelleSpec(_ZYMOGEN, _ACINAR, params.zymogen_area_fraction,
                       params.zymogen_diameter_um, 0.97, "apical"),
        _OrganelleSpec(_INSULIN, _BETA, params.insulin_granule_area_fraction,
                       params.insulin_granule_diameter_nm * 1e-3,
                       params.insulin_core_fraction, "any"),
        _OrganelleSpec(_GLUCAGON, _ALPHA, params.glucagon_granule_area_fraction,
                       params.glucagon_granule_diameter_nm * 1e-3,
                       params.glucagon_core_fraction, "any"),
    ]


def _in_zone(cells: _Cells, params: SimulationParams, spec: _OrganelleSpec, p: np.ndarray,
             radius: np.ndarray, warp: _Warp) -> np.ndarray:
    """Whether profiles of ``radius`` centred at local points ``p`` (µm) fit their zone."""
    q = warp(p)
    owner, other, dm = cells.membrane_distance(q)
    ok = cells.kind[owner] == spec.cell_kind
    ok &= dm - cells.half_gap(owner, other) > radius + 0.05
    ok &= cells.nucleus_distance(q, owner) > radius + 0.05
    to_apex = np.linalg.norm(q - cells.apex[owner], axis=1)
    reach = cells.apex_reach[owner]
    if spec.cell_kind == _ACINAR:
        ok &= to_apex > cells.lumen_radius[owner] + radius + 0.05
    if spec.zone == "apical":
        ok &= to_apex < params.zymogen_zone_frac * reach
    elif spec.zone == "basal":
        ok &= to_apex > 0.5 * reach
    return ok


def _draw_profiles(rng: np.random.Generator, spec: _OrganelleSpec, n: int,
                   size_cv: float) -> dict[str, Any]:
    """Random section profiles of ``n`` organelles of one kind (3-D size CV ``size_cv``)."""
    sigma = math.sqrt(math.log1p(size_cv**2))
    if spec.kind == _MITO:
        minor = spec.diameter_um / 2 * rng.uniform(0.75, 1.25, n)
        major = minor * rng.uniform(1.1, 4.0, n)
        return {"radius": major, "minor": minor, "core_radius": np.zeros(n),
                "level": np.full(n, STAIN_DENSITY["mito_matrix"])}
    sphere = spec.diameter_um / 2 * rng.lognormal(-sigma**2 / 2, sigma, n)
    height = rng.uniform(0.0, 0.8, n) * sphere  # section plane vs granule centre
    radius = np.sqrt(sphere**2 - height**2)
    core = np.sqrt(np.clip((spec.core_fraction * sphere) ** 2 - height**2, 0.0, None))
    level = {
        _ZYMOGEN: rng.uniform(0.78, 0.92, n) / 0.85 * STAIN_DENSITY["zymogen_granule"],
        _INSULIN: np.full(n, STAIN_DENSITY["insulin_core"]),
        _GLUCAGON: np.full(n, STAIN_DENSITY["glucagon_core"]),
    }[spec.kind]
    return {"radius": radius, "minor": radius, "core_radius": core, "level": level}


def _hard_core_keep(centres: np.ndarray, radius: np.ndarray,
                    old_centres: np.ndarray, old_radius: np.ndarray) -> np.ndarray:
    """Mask of candidates (in priority order) overlapping neither accepted profiles nor an
    earlier candidate (Matérn type II thinning)."""
    keep = np.ones(len(centres), bool)
    if len(centres) == 0:
        return keep
    reach = radius.max() + _ORGANELLE_GAP_UM
    if len(old_centres):
        k = min(16, len(old_centres))
        d, j = cKDTree(old_centres).query(centres, k=k,
                                          distance_upper_bound=reach + old_radius.max())
        valid = j < len(old_centres)
        limit = radius[:, None] + np.where(valid, old_radius[np.minimum(j, len(old_radius) - 1)],
                                           0.0) + _ORGANELLE_GAP_UM
        keep &= ~np.any(valid & (d < limit), axis=1)
    pairs = cKDTree(centres).query_pairs(2 * reach, output_type="ndarray")
    if len(pairs):
        i, j = pairs.min(axis=1), pairs.max(axis=1)
        close = np.linalg.norm(centres[i] - centres[j], axis=1) < (
            radius[i] + radius[j] + _ORGANELLE_GAP_UM)
        keep[j[close]] = False
    return keep


def _place_organelles(rng: np.random.Generator, params: SimulationParams, cells: _Cells,
                      low: np.ndarray, high: np.ndarray, warp: _Warp) -> _Organelles:
    """Random, non-overlapping organelle profiles filling each zone to its area fraction.

    Organelles live in the unwarped local frame (round granules); their zones are tested
    in the warped frame of the cells.
    """
    area = float(np.prod(high - low))
    columns: dict[str, list[np.ndarray]] = {
        k: [] for k in ("kind", "centre", "radius", "minor", "core_radius", "level")}
    for spec in _organelle_specs(params):
        if spec.area_fraction <= 0:
            continue
        probe = rng.uniform(low, high, (4000, 2))
        mean_r = spec.diameter_um / 2 * (0.8 if spec.kind != _MITO else 1.0)
        zone_share = _in_zone(cells, params, spec, probe, np.full(len(probe), mean_r),
                              warp).mean()
        if zone_share == 0:
            continue
        sample = _draw_profiles(rng, spec, 2000, params.granule_size_cv)
        mean_area = float(np.mean(np.pi * sample["radius"] * sample["minor"]))
        target = int(spec.area_fraction * zone_share * area / mean_area)
        placed = 0
        for _ in range(6):
            need = target - placed
            if need <= 0:
                break
            n_cand = int(2.5 * need / zone_share) + 16
            centre = rng.uniform(low, high, (n_cand, 2))
            prof = _draw_profiles(rng, spec, n_cand, params.granule_size_cv)
            ok = _in_zone(cells, params, spec, centre, prof["radius"], warp)
            centre, prof = centre[ok], {k: v[ok] for k, v in prof.items()}
            old_c = (np.concatenate(columns["centre"]) if columns["centre"]
                     else np.zeros((0, 2)))
            old_r = np.concatenate(columns["radius"]) if columns["radius"] else np.zeros(0)
            keep = np.flatnonzero(_hard_core_keep(centre, prof["radius"], old_c, old_r))[:need]
            columns["centre"].append(centre[keep])
            columns["kind"].append(np.full(len(keep), spec.kind))
            for k in ("radius", "minor", "core_radius", "level"):
                columns[k].append(prof[k][keep])
            placed += len(keep)
    merged = {k: (np.concatenate(v) if v else np.zeros((0, 2) if k == "centre" else 0))
              for k, v in columns.items()}
    n = len(merged["kind"])
    core_room = np.clip(merged["radius"] - merged["core_radius"] - 0.01, 0.0, None)
    insulin = merged["kind"] == _INSULIN
    offset = _random_in_disc(rng, 1.0, n) * (0.5 * core_room * insulin)[:, None]
    return _Organelles(
        kind=merged["kind"].astype(int),
        centre=merged["centre"],
        radius=merged["radius"],
        core_radius=merged["core_radius"],
        core_offset=offset.reshape(n, 2),
        minor=merged["minor"],
        angle=_mito_angles(rng, cells, warp(merged["centre"])),
        level=merged["level"],
        phase=rng.uniform(0, 2 * math.pi, n),
    )


def _mito_angles(rng: np.random.Generator, cells: _Cells, centre: np.ndarray) -> np.ndarray:
    """Long-axis angles: acinar mitochondria lie along the RER (tangential), others random."""
    n = len(centre)
    if n == 0:
        return np.zeros(0)
    owner, _, _ = cells.membrane_distance(centre)
    radial = centre - cells.apex[owner]
    tangential = np.arctan2(radial[:, 1], radial[:, 0]) + math.pi / 2
    acinar = cells.kind[owner] == _ACINAR
    return np.where(acinar, tangential + rng.normal(0, 0.35, n), rng.uniform(0, math.pi, n))


# ----------------------------------------------------------------------------- tissue sampling


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


@dataclass
class _Labelling:
    """Fluorophore labelling efficiency of the section's structures (true density factors).

    Invisible in the SEM, part of the true fluorophore density (hence of ``fm_clean`` and
    ``fm_specific``). Lognormal factors of mean 1 drawn as fixed-size standard normal
    arrays, so a CV changes the factors' spread, never which random numbers are used.

    Attributes:
        hoechst_nucleus: (N cells,) Hoechst staining factor of each cell's nucleus.
        insulin_cell: (N cells,) insulin labelling factor of each cell (used for beta cells).
        insulin_granule: (M organelles,) labelling factor of each granule's exposed core.
        insulin_organelle: (M,) total insulin factor of each organelle: its host cell's
            factor times its own.
    """

    hoechst_nucleus: np.ndarray
    insulin_cell: np.ndarray
    insulin_granule: np.ndarray
    insulin_organelle: np.ndarray

    @classmethod
    def make(cls, rng: np.random.Generator, params: SimulationParams, cells: _Cells,
             organelles: _Organelles, warp: _Warp) -> _Labelling:
        """Draw the factors from ``rng`` (cells first, then organelles)."""
        n, m = len(cells.seeds), len(organelles.kind)
        hoechst = _lognormal_factor(rng.standard_normal(n), params.hoechst_nucleus_cv)
        cell = _lognormal_factor(rng.standard_normal(n), params.insulin_cell_cv)
        granule = _lognormal_factor(rng.standard_normal(m), params.insulin_granule_cv)
        host = (cells.membrane_distance(warp(organelles.centre))[0] if m
                else np.zeros(0, int))
        return cls(hoechst, cell, granule, cell[host] * granule)


def _lognormal_factor(z: np.ndarray, cv: float) -> np.ndarray:
    """Lognormal factors of mean 1 and coefficient of variation ``cv`` from standard normals
    ``z`` (exactly 1 for ``cv = 0``)."""
    sigma = math.sqrt(math.log1p(cv * cv))
    return np.exp(sigma * z - sigma * sigma / 2)


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


class _Layers:
    """Per-point coverage (fraction of the pixel footprint) of every compartment.

    Args:
        tissue: the section's tissue.
        local: local points (µm, (N, 2)); cells and nuclei are evaluated at their warped
            position ``q``, organelles at ``local``.
        pitch: pixel footprint (µm).
        em: whether SEM-only detail (lamellae, cristae) is needed.
    """

    def __init__(self, tissue: Tissue, local: np.ndarray, pitch: float, em: bool) -> None:
        self.tissue, self.local, self.pitch, self.em = tissue, local, pitch, em
        self.q = tissue.warp(local)
        self.fine = tissue.textures.fine(self.q) if em else None  # granularity, unit std
        owner = self._cells()
        self.owner = owner
        self._nucleus(owner)
        self._rer(owner)
        self._organelles()

    def _cells(self) -> np.ndarray:
        cells, q, p = self.tissue.cells, self.q, self.pitch
        owner, other, dm = cells.membrane_distance(q)
        half = cells.half_gap(owner, other)
        thick = self.tissue.params.plasma_membrane_thickness_nm * 1e-3
        gap = _band(dm, -half, half, p)
        membrane = _band(dm, half, half + thick, p) + _band(-dm, half, half + thick, p)
        to_apex = np.linalg.norm(q - cells.apex[owner], axis=1)
        lumen_r = cells.lumen_radius[owner]
        has_lumen = lumen_r > 0
        lumen = np.where(has_lumen, _cover(to_apex - lumen_r, p), 0.0)
        membrane = np.maximum(membrane, np.where(
            has_lumen, _band(to_apex - lumen_r, 0.0, 2 * thick, p), 0.0))
        self.kind = cells.kind[owner]
        self.extracellular = np.maximum(gap, lumen)
        self.membrane = membrane
        self._owner_dm = dm - half
        self._to_apex = to_apex
        return owner

    def _nucleus(self, owner: np.ndarray) -> None:
        cells, p, tex = self.tissue.cells, self.pitch, self.tissue.textures
        params = self.tissue.params
        sd = cells.nucleus_distance(self.q, owner)
        n = len(self.q)
        self.nucleus = _cover(sd, p)
        self.envelope = _band(sd, -_NUCLEAR_ENVELOPE_UM, 0.0, p)
        self.heterochromatin = np.zeros(n)
        self.nucleolus = np.zeros(n)
        inside = np.flatnonzero(sd < p)
        if len(inside) == 0:
            return
        q, o = self.q[inside], owner[inside]
        depth = -sd[inside]
        rough = tex.wobble(q)  # ragged clump edges
        band = params.heterochromatin_band_um * np.clip(
            1.0 + 0.9 * tex.het_band(q) + 0.3 * rough, 0.0, 3.0)
        peripheral = _cover(depth - band, p)
        threshold = special.ndtri(1.0 - np.clip(cells.het_fraction[o], 1e-4, 0.9))
        patches = np.clip((tex.het_patch(q) + 0.35 * rough - threshold) / 0.25 + 0.5, 0.0, 1.0)
        nl_r = cells.nl_radius[o]
        to_nl = np.linalg.norm(q - cells.nl_centre[o], axis=1) - nl_r
        has_nl = nl_r > 0
        nucleolus = np.where(has_nl, _cover(to_nl, p), 0.0)
        ring = np.where(has_nl, _band(to_nl, 0.0, 0.6 * band, p), 0.0)
        self.heterochromatin[inside] = np.maximum.reduce([peripheral, patches, ring])
        self.nucleolus[inside] = nucleolus

    def _rer(self, owner: np.ndarray) -> None:
        cells, p, tex = self.tissue.cells, self.pitch, self.tissue.textures
        params = self.tissue.params
        self.rer = np.zeros(len(self.q))  # RNA-rich RER presence (0 … 1)
        self.rer_stain = np.zeros(len(self.q))  # SEM stain of the lamellae
        self.rer_opacity = np.zeros(len(self.q))  # RER presence with broken cisternae (SEM)
        acinar = np.flatnonzero((self.kind == _ACINAR) & (self.nucleus < 1.0))
        if len(acinar) == 0:
            return
        q = self.q[acinar]
        reach = cells.apex_reach[owner[acinar]]
        start = params.rer_zone_start_frac * reach
        zone = np.clip((self._to_apex[acinar] - start) / 1.0, 0.0, 1.0)
        patchy = np.clip(0.75 + 0.5 * tex.rer_patch(q), 0.0, 1.0)
        self.rer[acinar] = zone * patchy
        if self.em:
            period = params.rer_lamella_period_nm * 1e-3
            phase = 2 * math.pi * (self._to_apex[acinar] / period + 1.2 * tex.rer_bend(q))
            lamella = _stripes(phase, 0.4, period / p) * np.clip(
                0.8 + 0.3 * self.fine[acinar], 0.0, 1.0)
            self.rer_stain[acinar] = _mix(np.full(len(q), STAIN_DENSITY["rer_cisterna"]),
                                          STAIN_DENSITY["rer_lamella"], lamella)
            broken = np.clip((tex.wobble(q) + 0.9) / 0.4, 0.0, 1.0)
            self.rer_opacity[acinar] = self.rer[acinar] * broken

    def _organelles(self) -> None:
        org, p = self.tissue.organelles, self.pitch
        n = len(self.q)
        self.organelle = np.full(n, -1)
        self.outer, self.core, self.rim = np.zeros(n), np.zeros(n), np.zeros(n)
        self.inner_stain = np.zeros(n)
        candidates = np.flatnonzero((self.nucleus < 1.0) & (self.extracellular < 1.0))
        idx = org.nearest(self.local[candidates], p)
        found = idx >= 0
        pts, idx = candidates[found], idx[found]
        self.organelle[pts] = idx
        rel = self.local[pts] - org.centre[idx]
        mito = org.kind[idx] == _MITO
        self._discs(pts[~mito], idx[~mito], rel[~mito])
        self._mitochondria(pts[mito], idx[mito], rel[mito])

    def _discs(self, pts: np.ndarray, idx: np.ndarray, rel: np.ndarray) -> None:
        org, p = self.tissue.organelles, self.pitch
        thick = self.tissue.params.plasma_membrane_thickness_nm * 1e-3
        dist = np.linalg.norm(rel, axis=1) - org.radius[idx]
        to_core = np.linalg.norm(rel - org.core_offset[idx], axis=1) - org.core_radius[idx]
        self.outer[pts] = _cover(dist, p)
        self.rim[pts] = _band(dist, -thick, 0.0, p)
        self.core[pts] = np.where(org.core_radius[idx] > 0, _cover(to_core, p), 0.0)

    def _mitochondria(self, pts: np.ndarray, idx: np.ndarray, rel: np.ndarray) -> None:
        org, p = self.tissue.organelles, self.pitch
        params = self.tissue.params
        c, s = np.cos(org.angle[idx]), np.sin(org.angle[idx])
        u, v = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
        a, b = org.radius[idx], org.minor[idx]
        f = (u / a) ** 2 + (v / b) ** 2 - 1.0
        sd = f / np.maximum(2.0 * np.hypot(u / a**2, v / b**2), 1e-9)
        thick = 2 * params.plasma_membrane_thickness_nm * 1e-3
        self.outer[pts] = _cover(sd, p)
        self.rim[pts] = _band(sd, -thick, 0.0, p)
        if self.em:
            period = params.mitochondrion_crista_period_nm * 1e-3
            bend = 1.5 * self.tissue.textures.wobble(self.local[pts])
            cristae = _stripes(2 * math.pi * u / period + org.phase[idx] + bend, 0.35,
                               period / p)
            cristae *= _cover(sd + 2 * thick, p)
            self.inner_stain[pts] = _mix(np.full(len(pts), STAIN_DENSITY["mito_matrix"]),
                                         STAIN_DENSITY["mito_crista"], cristae)

    # ------------------------------------------------------------------ outputs

    def _granule_level(self) -> tuple[np.ndarray, np.ndarray]:
        """Stain of granule halo / mitochondrial interior and of dense cores, per point."""
        org = self.tissue.organelles
        has = self.organelle >= 0
        idx = np.where(has, self.organelle, 0)
        kind = np.where(has, org.kind[idx] if len(org.kind) else 0, -1)
        halo = np.where(kind == _MITO, self.inner_stain, STAIN_DENSITY["insulin_halo"])
        core = np.where(has, org.level[idx] if len(org.level) else 0.0, 0.0)
        return halo, core

    def em_outputs(self) -> dict[str, np.ndarray]:
        """Stain density (0 = resin) and tissue class label per point."""
        fine = self.fine
        stain = _CYTO_STAIN[self.kind] + 0.035 * fine
        stain = _mix(stain, self.rer_stain, self.rer_opacity)
        halo, core_level = self._granule_level()
        stain = _mix(stain, halo, self.outer)
        stain = _mix(stain, core_level, self.core)
        stain = _mix(stain, STAIN_DENSITY["granule_membrane"], self.rim)
        chromatin = _mix(STAIN_DENSITY["euchromatin"] + 0.05 * fine,
                         STAIN_DENSITY["heterochromatin"] + 0.04 * fine, self.heterochromatin)
        chromatin = _mix(chromatin, STAIN_DENSITY["nucleolus"] + 0.08 * fine, self.nucleolus)
        stain = _mix(stain, chromatin, self.nucleus)
        stain = _mix(stain, STAIN_DENSITY["nuclear_envelope"], self.envelope)
        matrix = np.full(len(stain), STAIN_DENSITY["extracellular"])
        gap = np.flatnonzero(self.extracellular > 0)
        matrix[gap] += 0.06 * np.clip(self.tissue.textures.fibrils(self.q[gap]), 0.0, None)
        stain = _mix(stain, matrix, self.extracellular)
        stain = _mix(stain, STAIN_DENSITY["membrane"], self.membrane)
        return {"stain": stain.astype(np.float32), "label": self._labels()}

    def _labels(self) -> np.ndarray:
        """Tissue class per point, later layers win where they cover ≥ half the pixel."""
        org = self.tissue.organelles
        label = _CYTO_LABEL[self.kind].copy()
        label[self.rer > 0.5] = LABELS["rough_er"]
        has = self.organelle >= 0
        kind = org.kind[self.organelle[has]] if len(org.kind) else np.zeros(0, int)
        organelle_label = label[has]
        organelle_label[self.outer[has] >= 0.5] = _GRANULE_LABEL[kind[self.outer[has] >= 0.5]]
        label[has] = organelle_label
        nucleus = self.nucleus >= 0.5
        label[nucleus] = LABELS["euchromatin"]
        label[nucleus & (self.heterochromatin >= 0.5)] = LABELS["heterochromatin"]
        label[nucleus & (self.nucleolus >= 0.5)] = LABELS["nucleolus"]
        label[self.envelope >= 0.5] = LABELS["nuclear_envelope"]
        label[self.extracellular >= 0.5] = LABELS["extracellular"]
        label[self.membrane >= 0.5] = LABELS["membrane"]
        return label

    def fm_outputs(self) -> dict[str, np.ndarray]:
        """Fluorophore densities per point (true, labelling factors included).

        ``dna``: DNA × the nucleus's Hoechst staining factor; ``rna``: RER RNA; ``insulin``:
        insulin cores of beta cells × the cell's and the granule's labelling factors;
        ``tissue``: tissue presence; ``autofluorescence``: tissue presence with zymogen
        granules weighted by ``zymogen_autofluorescence_ratio``.
        """
        params, org = self.tissue.params, self.tissue.organelles
        labelling = self.tissue.labelling
        tissue = 1.0 - self.extracellular
        dna = self.nucleus * (1.0 + (params.heterochromatin_dna_ratio - 1.0)
                              * self.heterochromatin)
        dna *= 1.0 - (1.0 - params.nucleolus_dna_ratio) * self.nucleolus
        dna *= labelling.hoechst_nucleus[self.owner]
        rna = self.rer * (1.0 - self.nucleus) * (1.0 - self.outer) * tissue
        has = self.organelle >= 0
        kind = np.full(len(self.q), -1)
        kind[has] = org.kind[self.organelle[has]]
        factor = np.zeros(len(self.q))
        factor[has] = labelling.insulin_organelle[self.organelle[has]]
        insulin = np.where(kind == _INSULIN, self.core * factor, 0.0) * (1.0 - self.nucleus)
        zymogen = np.where(kind == _ZYMOGEN, self.outer, 0.0)
        autofluorescence = tissue + (params.zymogen_autofluorescence_ratio - 1.0) * zymogen
        return {
            "dna": dna.astype(np.float32),
            "rna": rna.astype(np.float32),
            "insulin": insulin.astype(np.float32),
            "tissue": tissue.astype(np.float32),
            "autofluorescence": autofluorescence.astype(np.float32),
        }


# ----------------------------------------------------------------------------- SEM


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


# ----------------------------------------------------------------------------- FM


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
    and the section's per-channel brightness; the camera offset is added later.
    """
    factor = math.ceil(params.fm_pixel_size_nm / params.fm_render_pitch_max_nm - 1e-9)
    pitch_nm = params.fm_pixel_size_nm / factor
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


# ----------------------------------------------------------------------------- entry point


def build_tissue(params: SimulationParams, rng: np.random.Generator,
                 em: ImageGeometry, fm_true: ImageGeometry,
                 labelling_rng: np.random.Generator | None = None) -> Tissue:
    """Tissue covering the SEM field and the true FM field (plus the PSF margin)."""
    corners = np.array([[-0.5, -0.5], [fm_true.shape_yx[1] - 0.5, fm_true.shape_yx[0] - 0.5]])
    corners = np.array([[x, y] for x in corners[:, 0] for y in corners[:, 1]])
    matrix = fm_true.pixel_to_stage()
    stage = corners @ matrix[:2, :2].T + matrix[:2, 2]
    half = float(np.abs(stage - np.asarray(em.centre_m)).max()) * 1e6 + 1.0
    return Tissue(params, rng, em.centre_m, half, labelling_rng)


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


# ----------------------------------------------------------------------------- export


_ACQUISITION_DATE = "2026-01-15T09:00:00"  # fixed: same config and seed → same files


def odemis_images(sim: SimulatedSection, params: SimulationParams,
                  index: int) -> list[OdemisImage]:
    """Section ``index`` as Odemis would export it: one merged FM image and the SEM image.

    The FM carries the METADATA placement (with the stage error), as a real export would.
    """
    fm_g, em_g = sim.fm_geometry_meta, sim.em_geometry
    date = _dt.datetime.fromisoformat(_ACQUISITION_DATE) + _dt.timedelta(hours=index)
    channels = [Channel(n, ex, em) for n, ex, em in sim.channels]
    fm = OdemisImage(
        name=channels[-1].name, data=sim.fm, channels=channels, shape_cyx=sim.fm.shape,
        dtype="uint16", pixel_size_m=fm_g.pixel_size_m, centre_m=fm_g.centre_m,
        rotation_rad=fm_g.rotation_rad, acquisition_date=date.isoformat(),
        significant_bits=params.fm_significant_bits, detector="em2fm simulated sCMOS camera",
        extra_settings={"Stage": {"position": [{"x": fm_g.centre_m[0],
                                                "y": fm_g.centre_m[1]}, "m"]}},
    )
    em = OdemisImage(
        name="Backscattered electrons", data=sim.em[None], channels=[
            Channel("Backscattered electrons")],
        shape_cyx=(1, *sim.em.shape), dtype="uint16", pixel_size_m=em_g.pixel_size_m,
        centre_m=em_g.centre_m, rotation_rad=em_g.rotation_rad,
        acquisition_date=(date + _dt.timedelta(minutes=5)).isoformat(),
        exposure_time_s=sim.em_dwell_time_s, voltage_v=sim.em_voltage_v,
        current_a=sim.em_current_a, significant_bits=params.em_significant_bits,
        detector="em2fm simulated SEM (backscattered electrons)",
        extra_settings={"E-beam": {"accelVoltage": [sim.em_voltage_v, "V"],
                                   "dwellTime": [sim.em_dwell_time_s, "s"]},
                        "Stage": {"position": [{"x": em_g.centre_m[0],
                                                "y": em_g.centre_m[1]}, "m"]}},
    )
    return [fm, em]


def truth_metadata(sim: SimulatedSection, params: SimulationParams, index: int,
                   seed: int) -> dict:
    """Ground truth kept apart from the exports (read by evaluation only)."""
    def geom(g: ImageGeometry) -> dict:
        return {"shape": list(g.shape_yx), "pixel_size_m": list(g.pixel_size_m),
                "centre_m": list(g.centre_m), "rotation_rad": g.rotation_rad}

    return {
        "section": sim.name,
        "index": index,
        "seed": seed,
        "fm_to_em_px": moving_to_fixed_px(sim.fm_geometry_true, sim.em_geometry),
        "fm_to_em_px_metadata": moving_to_fixed_px(sim.fm_geometry_meta, sim.em_geometry),
        "fm_geometry_true": geom(sim.fm_geometry_true),
        "fm_geometry_metadata": geom(sim.fm_geometry_meta),
        "em_geometry": geom(sim.em_geometry),
        "channels": [{"name": n, "excitation_nm": ex, "emission_nm": em}
                     for n, ex, em in sim.channels],
        "labels": LABELS,
        "fm_acquisition": section_fm_acquisition(params, index, seed).as_dict(),
        "params": {f.name: getattr(params, f.name) for f in fields(params)},
    }


def run(section: str, index: int, seed: int, physics: dict, variant: str,
        exports_dir: str | Path, truth_json: str | Path, truth_npz: str | Path) -> None:
    """Simulate one section; write its Odemis exports and, apart, its ground truth.

    Args:
        section: section name (folder name of the exports).
        index: section index (with ``seed``, selects the random tissue).
        seed: workflow seed.
        physics: the ``simulate.params`` config mapping (defaults for missing keys).
        variant: ``gui`` (one GUI acquisition file) or ``per-stream`` (one file per stream).
        exports_dir: folder to create with the section's exports.
        truth_json: true transforms and parameters.
        truth_npz: noise-free FM (``fm_clean``, ``fm_specific``), ``em_clean``, ``labels``.
    """
    params = SimulationParams.from_config(physics)
    sim = simulate_section(params, index, seed, name=section)
    images = odemis_images(sim, params, index)
    out = Path(exports_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if variant == "gui":
            write_file(tmp / f"{section}.ome.tiff", images, thumbnail=True)
        elif variant == "per-stream":
            write_per_stream(tmp, section, images)
        else:
            raise ValueError(f"simulate.variant must be gui or per-stream, not {variant!r}")
        io.save_npz(truth_npz, fm_clean=sim.fm_clean, fm_specific=sim.fm_specific,
                    em_clean=sim.em_clean, labels=sim.labels)
        io.write_json(truth_json, truth_metadata(sim, params, index, seed))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: wrote %s export to %s", section, variant, out)
