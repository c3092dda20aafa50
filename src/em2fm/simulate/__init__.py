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

Modules: :mod:`.params` (:class:`SimulationParams`, the one source of truth of the
``simulate.params`` config keys; ``python -m em2fm.simulate`` prints them with units, bounds
and defaults), :mod:`.anatomy` (tissue classes, stain densities, primitives, textures),
:mod:`.cells` (islet, cells, nuclei), :mod:`.organelles`, :mod:`.layers` (per-point
coverage, SEM stain and FM fluorophore density), :mod:`.tissue` (:class:`Tissue`,
labelling), :mod:`.em` (SEM rendering and noise), :mod:`.fm` (photons, PSF, illumination,
camera), :mod:`.section` (placements, generators, :func:`simulate_section`) and
:mod:`.export` (Odemis images, ground truth, :func:`run`).
"""

from .anatomy import LABELS, STAIN_DENSITY
from .em import correlated_noise, em_noise_std
from .export import odemis_images, run, truth_metadata
from .fm import FmAcquisition, fm_acquisition, illumination_profile, psf_sigma_nm
from .params import SimulationParams, parameter_table
from .section import (
    SimulatedSection,
    section_em_geometry,
    section_fm_acquisition,
    section_layout,
    simulate_section,
)
from .tissue import Tissue, build_tissue, fine_geometry, pixel_points_um

__all__ = [
    "LABELS",
    "STAIN_DENSITY",
    "FmAcquisition",
    "SimulatedSection",
    "SimulationParams",
    "Tissue",
    "build_tissue",
    "correlated_noise",
    "em_noise_std",
    "fine_geometry",
    "fm_acquisition",
    "illumination_profile",
    "odemis_images",
    "parameter_table",
    "pixel_points_um",
    "psf_sigma_nm",
    "run",
    "section_em_geometry",
    "section_fm_acquisition",
    "section_layout",
    "simulate_section",
    "truth_metadata",
]
