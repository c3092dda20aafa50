"""Physical parameters of the simulator: :class:`SimulationParams`, one source of truth.

Each field carries its unit, bounds and description; :meth:`SimulationParams.json_schema`
derives the JSON schema that validates ``simulate.params`` of config.yaml. Light: numpy
only (imported by :mod:`em2fm.config` at workflow start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


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
    fm_pixel_size_error_max_frac: float = _param(
        0.005, "Largest calibration error of the FM pixel size (dimensionless fraction): per "
        "section the TRUE FM pixel size is fm_pixel_size_nm·(1 + u), u uniform in ±max, while "
        "the metadata keeps the nominal fm_pixel_size_nm (a SECOM's FM pixel size is "
        "typically off by 0.3-1 %). The truth's fm_to_em_px carries the true scale; 0 "
        "disables it.", minimum=0.0, maximum=0.05)
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
    em_chromatin_contrast: float = _param(
        1.0, "Multiplier (dimensionless) of the SEM stain contrast of chromatin (euchromatin "
        "and heterochromatin) against the owner cell's cytoplasm: 1 is the default model, 0 "
        "stains chromatin like the surrounding cytoplasm (nuclei then show only by their "
        "envelope and nucleolus), 2 doubles the contrast. For an SEM contrast that does not "
        "mirror the FM chromatin stain.", minimum=0.0, maximum=2.0)
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
    hoechst_stained_nucleus_fraction: float = _param(
        1.0, "Fraction (dimensionless) of nuclei whose DNA takes up the Hoechst stain, "
        "drawn per nucleus. Post-embedding chromatin staining can be sparse: few nuclei "
        "shine in FM while the SEM shows all of them. Unstained nuclei have no Hoechst DNA "
        "signal; the aspecific RNA signal, bleed-through, autofluorescence and background "
        "stay.", minimum=0.0, maximum=1.0)
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
        if self.fm_field_um * (1 - self.fm_pixel_size_error_max_frac) / 2 <= (
                self.em_reach_in_fm_um):
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
        """Nominal FM field width (µm), from the nominal pixel size."""
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

        ``cfg`` is the physics mapping of config.yaml (``simulate: params:``, validated at
        workflow start against :meth:`json_schema`); ``None`` means all defaults.

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



def _bounds(default: Any, meta: Any) -> str:
    """Allowed range of one field, e.g. ``[0, 1]``, ``(0, ∞)``, ``any``, ``true/false``."""
    if isinstance(default, bool):
        return "true/false"
    if isinstance(default, str):
        return "text"
    if "exclusiveMinimum" in meta:
        low = f"({meta['exclusiveMinimum']:g}"
    elif "minimum" in meta:
        low = f"[{meta['minimum']:g}"
    else:
        low = "(-∞"
    high = f"{meta['maximum']:g}]" if "maximum" in meta else "∞)"
    return "any" if low == "(-∞" and high == "∞)" else f"{low}, {high}"


def parameter_table(width: int = 100) -> str:
    """Plain-text table of every ``simulate.params`` key: name, default, bounds, description.

    Args:
        width: line width (characters) to which the description column is wrapped.
    """
    import textwrap

    rows = [(f.name, str(f.default).lower() if isinstance(f.default, bool) else repr(f.default),
             _bounds(f.default, f.metadata), f.metadata["doc"]) for f in fields(SimulationParams)]
    header = ("key", "default", "bounds", "description")
    w = [max(len(r[i]) for r in [*rows, header]) for i in range(3)]
    indent = sum(w) + 6
    lines = []
    for row in [header, *rows]:
        head = "  ".join(c.ljust(n) for c, n in zip(row[:3], w, strict=True)) + "  "
        text = textwrap.wrap(row[3], max(width - indent, 30)) or [""]
        lines.append(head + text[0])
        lines.extend(" " * indent + more for more in text[1:])
    return "\n".join(lines)


def main() -> None:
    """Print :func:`parameter_table` (``python -m em2fm.simulate``)."""
    print("simulate.params of config.yaml: a key left out takes its default. Units are in the "
          "key names\nand descriptions; bounds: [ ] inclusive, ( ) exclusive.\n")
    print(parameter_table())


if __name__ == "__main__":
    main()
