"""Tests of the section simulator (small fields: the whole file runs in well under 30 s)."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from em2fm.geometry import ImageGeometry, apply_affine, grid_points, moving_to_fixed_px
from em2fm.simulate import (
    LABELS,
    SimulatedSection,
    SimulationParams,
    correlated_noise,
    fine_geometry,
    illumination_profile,
    odemis_images,
    parameter_table,
    pixel_points_um,
    psf_sigma_nm,
    section_em_geometry,
    section_fm_acquisition,
    section_layout,
    simulate_section,
    truth_metadata,
)
from em2fm.simulate.anatomy import _ACINAR, _ALPHA, _BETA, _GLUCAGON, _INSULIN, _ZYMOGEN
from em2fm.simulate.section import _fm_geometries, _simulate_fm

SRC = Path(__file__).resolve().parents[1] / "src"

# 12.8 µm SEM field at 25 nm/px, 20.4 µm FM field; alpha cells everywhere in the islet so
# that both endocrine kinds are in the small field.
SMALL = {
    "em_size_px": 512,
    "em_pixel_size_nm": 25.0,
    "fm_size_px": 192,
    "alpha_fraction_mantle": 0.5,
    "alpha_fraction_core": 0.5,
}
SEED = 10

ISLET = [LABELS[k] for k in ("beta_cytoplasm", "insulin_granule", "alpha_cytoplasm",
                             "glucagon_granule")]
ALPHA = [LABELS["alpha_cytoplasm"], LABELS["glucagon_granule"]]
EXOCRINE = [LABELS[k] for k in ("acinar_cytoplasm", "rough_er", "zymogen_granule")]
NUCLEUS = [LABELS[k] for k in ("euchromatin", "heterochromatin", "nucleolus")]


def small_params(**changes: object) -> SimulationParams:
    return SimulationParams.from_config({**SMALL, **changes})


@pytest.fixture(scope="module")
def section() -> SimulatedSection:
    return simulate_section(small_params(), index=2, seed=SEED)


def pcc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a).astype(float), np.ravel(b).astype(float))[0, 1])


def fm_on_grid(image: np.ndarray, fm: ImageGeometry, grid: ImageGeometry) -> np.ndarray:
    """Resample an FM image (placed by ``fm``) onto the pixels of ``grid`` (bilinear)."""
    to_fm = fm.stage_to_pixel() @ grid.pixel_to_stage()
    xy = apply_affine(to_fm, grid_points(grid.shape_yx))
    values = ndimage.map_coordinates(image, [xy[:, 1], xy[:, 0]], order=1, mode="nearest")
    return values.reshape(grid.shape_yx)


# ----------------------------------------------------------------------------- parameters


def test_from_config_defaults_and_types() -> None:
    assert SimulationParams.from_config({}) == SimulationParams()
    assert SimulationParams.from_config(None) == SimulationParams()
    p = SimulationParams.from_config({"em_pixel_size_nm": 5, "em_invert": True})
    assert p.em_pixel_size_nm == 5.0 and isinstance(p.em_pixel_size_nm, float)
    assert p.em_invert is True


def test_from_config_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="em_pixel_size_um"):
        SimulationParams.from_config({"em_pixel_size_um": 0.01})


@pytest.mark.parametrize("bad", [
    {"em_size_px": 1.5}, {"em_invert": "yes"}, {"em_dwell_time_s": 0.0},
    {"em_noise_correlation": 0.9}, {"hoechst_bleed_through": -0.1},
    {"fm_meta_shift_min_um": 2.0, "fm_meta_shift_max_um": 1.0},
    {"fm_size_px": 128},  # FM field smaller than the rotated SEM field
])
def test_invalid_values_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        SimulationParams.from_config(bad)


def test_json_schema_matches_the_dataclass() -> None:
    schema = SimulationParams.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    defaults = {f.name: f.default for f in dataclasses.fields(SimulationParams)}
    assert set(schema["properties"]) == set(defaults)
    for name, default in defaults.items():
        entry = schema["properties"][name]
        assert entry["default"] == default and type(entry["default"]) is type(default), name
        assert entry["description"], name
    jsonschema.validate(defaults, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"em_size_px": 10}, schema)


def test_parameter_table_lists_every_field() -> None:
    table = parameter_table()
    rows = {line.split()[0]: line for line in table.splitlines() if line and line[0] != " "}
    for f in dataclasses.fields(SimulationParams):
        assert f.name in rows, f.name
    assert "[64, 8192]" in rows["em_size_px"] and "2560" in rows["em_size_px"]
    assert "(0, 1.5]" in rows["fm_numerical_aperture"]
    out = subprocess.run([sys.executable, "-m", "em2fm.simulate"], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert table in out.stdout


# ----------------------------------------------------------------------------- structure


def test_shapes_dtypes_and_metadata(section: SimulatedSection) -> None:
    p = small_params()
    assert section.name == "S003"
    assert section.em.shape == (512, 512) and section.em.dtype == np.uint16
    assert section.em_clean.shape == (512, 512) and section.em_clean.dtype == np.float32
    assert section.labels.shape == (512, 512) and section.labels.dtype == np.uint8
    for image, dtype in ((section.fm, np.uint16), (section.fm_clean, np.float32),
                         (section.fm_specific, np.float32)):
        assert image.shape == (2, 192, 192) and image.dtype == dtype
    assert section.channels == [("Hoechst", 405.0, 450.0), ("Insulin", 590.0, 617.0)]
    assert section.em_geometry.rotation_rad == 0.0
    assert section.em_geometry.centre_m == pytest.approx((1.0e-3 + 2 * 0.25e-3, 6.3e-3))
    assert section.em_geometry.pixel_size_m == pytest.approx((25e-9, 25e-9))
    nominal = p.fm_pixel_size_nm * 1e-9  # 106.4 nm
    assert section.fm_geometry_meta.pixel_size_m == (nominal, nominal)
    assert section.fm_geometry_true.pixel_size_m == pytest.approx((106.4e-9, 106.4e-9),
                                                                  rel=p.fm_pixel_size_error_max_frac)
    rotation = math.degrees(section.fm_geometry_true.rotation_rad)
    assert abs(rotation - 6.6) <= 0.5 + 1e-9
    assert (section.em_dwell_time_s, section.em_voltage_v, section.em_current_a) == (
        p.em_dwell_time_s, p.em_voltage_v, p.em_current_a)
    assert set(np.unique(section.labels)) <= set(LABELS.values())


def test_field_holds_islet_and_exocrine_with_both_endocrine_kinds(
        section: SimulatedSection) -> None:
    counts = np.bincount(section.labels.ravel(), minlength=len(LABELS))
    assert counts[ISLET].sum() > 0.05 * section.labels.size
    assert counts[EXOCRINE].sum() > 0.05 * section.labels.size
    for name in ("insulin_granule", "glucagon_granule", "zymogen_granule", "euchromatin"):
        assert counts[LABELS[name]] > 100, name


def test_deterministic() -> None:
    p = small_params(em_size_px=128, fm_size_px=96)
    a, b = simulate_section(p, 1, 3), simulate_section(p, 1, 3)
    for f in dataclasses.fields(SimulatedSection):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        else:
            assert x == y, f.name
    c = simulate_section(p, 2, 3)
    assert not np.array_equal(a.em_clean, c.em_clean)


def test_every_default_field_holds_islet_and_exocrine() -> None:
    p = SimulationParams()
    for index in range(5):
        em, _, _, tissue = section_layout(p, index, SEED)
        coarse = ImageGeometry((64, 64), (em.field_m[0] / 64,) * 2, em.centre_m)
        labels = tissue.render(coarse, em=True)["label"]
        assert np.isin(labels, ISLET).mean() > 0.1, index
        assert np.isin(labels, EXOCRINE).mean() > 0.1, index


def test_organelles_do_not_overlap_and_sit_in_their_cells() -> None:
    _, _, _, tissue = section_layout(small_params(), 2, SEED)
    org, cells = tissue.organelles, tissue.cells
    pairs = cKDTree(org.centre).query_pairs(2 * org.radius.max(), output_type="ndarray")
    gaps = np.linalg.norm(org.centre[pairs[:, 0]] - org.centre[pairs[:, 1]], axis=1) - (
        org.radius[pairs[:, 0]] + org.radius[pairs[:, 1]])
    assert gaps.min() > 0
    owner, _, _ = cells.membrane_distance(tissue.warp(org.centre))
    host = {"zymogen": _ACINAR, "insulin": _BETA, "glucagon": _ALPHA}
    codes = {"zymogen": _ZYMOGEN, "insulin": _INSULIN, "glucagon": _GLUCAGON}
    for name, kind in host.items():
        mine = org.kind == codes[name]
        assert mine.sum() > 5, name
        assert np.all(cells.kind[owner[mine]] == kind), name
        assert np.all(cells.nucleus_distance(tissue.warp(org.centre[mine]), owner[mine])
                      > org.radius[mine]), name
    insulin = org.kind == _INSULIN
    assert 0.6 < np.mean(org.core_radius[insulin] > 0) < 1.0  # some profiles miss the core
    assert np.all(org.core_radius[insulin] < org.radius[insulin])


# ----------------------------------------------------------------------------- SEM


def test_em_noise_scales_with_dwell_time() -> None:
    p = small_params(em_size_px=256, fm_size_px=128)
    short = simulate_section(dataclasses.replace(p, em_dwell_time_s=2e-6), 0, SEED)
    long = simulate_section(dataclasses.replace(p, em_dwell_time_s=8e-6), 0, SEED)
    assert np.array_equal(short.em_clean, long.em_clean)
    std_short = np.std(short.em - short.em_clean.astype(float))
    std_long = np.std(long.em - long.em_clean.astype(float))
    assert std_short / std_long == pytest.approx(2.0, rel=0.03)
    assert short.em.min() > 0 and short.em.max() < 2**16 - 1  # no clipping


def test_em_noise_is_spatially_correlated(section: SimulatedSection) -> None:
    residual = section.em - section.em_clean.astype(float)
    assert abs(residual.mean()) < 0.02 * residual.std()
    for axis in (0, 1):
        a = np.moveaxis(residual, axis, 0)
        r = pcc(a[1:], a[:-1])
        assert 0.15 < r < 0.35, (axis, r)
        r2 = pcc(a[2:], a[:-2])
        assert abs(r2) < 0.05  # 3-tap kernel: no correlation beyond one pixel


@pytest.mark.parametrize("lag1", [0.0, 0.25, 0.5])
def test_correlated_noise_has_the_requested_lag1(lag1: float) -> None:
    noise = correlated_noise(np.random.default_rng(0), (512, 512), lag1)
    assert noise.std() == pytest.approx(1.0, abs=0.01)
    assert pcc(noise[:, 1:], noise[:, :-1]) == pytest.approx(lag1, abs=0.01)
    assert pcc(noise[1:], noise[:-1]) == pytest.approx(lag1, abs=0.01)


def test_em_contrast(section: SimulatedSection) -> None:
    labels, clean = section.labels, section.em_clean
    dense = [LABELS[k] for k in ("heterochromatin", "zymogen_granule", "glucagon_granule")]
    resin = clean[labels == LABELS["extracellular"]].mean()
    assert clean[np.isin(labels, dense)].mean() > resin + 15000  # stain backscatters more
    assert clean[np.isin(labels, EXOCRINE + ISLET)].mean() > resin + 3000


def test_em_inversion() -> None:
    p = small_params(em_size_px=128, fm_size_px=96)
    normal = simulate_section(p, 0, SEED)
    inverted = simulate_section(dataclasses.replace(p, em_invert=True), 0, SEED)
    assert np.allclose(inverted.em_clean, 2**16 - 1 - normal.em_clean)
    assert pcc(inverted.em, normal.em) < -0.5


# ----------------------------------------------------------------------------- FM


def test_noise_ceiling(section: SimulatedSection) -> None:
    for c in range(2):
        ceiling = pcc(section.fm[c], section.fm_clean[c])
        assert 0.5 < ceiling < 0.999, (c, ceiling)


def test_fm_clean_is_the_expectation(section: SimulatedSection) -> None:
    p = small_params()
    residual = section.fm.astype(float) - section.fm_clean
    expected_var = p.fm_gain_adu_per_e * (section.fm_clean - p.fm_camera_offset_adu) + (
        p.fm_gain_adu_per_e * p.fm_read_noise_e) ** 2 + 1 / 12
    z = residual / np.sqrt(expected_var)
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert z.std() == pytest.approx(1.0, abs=0.03)


def test_specific_signal_has_no_offset_or_background(section: SimulatedSection) -> None:
    p = small_params()
    background = np.array([p.hoechst_background_e, p.insulin_background_e])
    # the uniform background is fluorescence: vignetted and scaled like the rest
    acquisition = section_fm_acquisition(p, 2, SEED)
    lit = illumination_profile(p, acquisition, section.fm.shape[1:])[None] * np.asarray(
        acquisition.brightness)[:, None, None]
    floor = p.fm_camera_offset_adu + p.fm_gain_adu_per_e * background[:, None, None] * lit
    assert np.all(section.fm_clean >= floor + section.fm_specific - 1e-3)
    assert np.all(section.fm_specific >= 0)
    for c in range(2):
        assert np.percentile(section.fm_specific[c], 5) < 1.0  # nothing labelled there
        assert section.fm_specific[c].max() > 50.0


def test_insulin_only_in_beta_cells(section: SimulatedSection) -> None:
    fine = section.em_geometry
    insulin = fm_on_grid(section.fm_specific[1], section.fm_geometry_true, fine)
    erode = round(0.6e-6 / fine.pixel_size_m[0])  # keep away from beta cells (PSF)
    alpha = ndimage.binary_closing(np.isin(section.labels, ALPHA), iterations=8)
    alpha = ndimage.binary_erosion(alpha, iterations=erode)
    granules = section.labels == LABELS["insulin_granule"]
    assert alpha.sum() > 200 and granules.sum() > 500
    assert insulin[alpha].mean() < 0.05 * insulin[granules].mean()
    above_offset = section.fm_clean[1] - small_params().fm_camera_offset_adu
    nonspecific = fm_on_grid(above_offset, section.fm_geometry_true, fine)
    assert nonspecific[granules].mean() > 2 * nonspecific[alpha].mean()


def test_bleed_through(section: SimulatedSection) -> None:
    """Without RNA binding, Hoechst minus DNA is flat unless Alexa 594 bleeds through."""
    p = small_params(hoechst_rna_fraction=0.0, hoechst_bleed_through=0.0,
                     hoechst_autofluorescence_e=0.0, fm_vignetting_corner_ratio=1.0,
                     fm_section_brightness_cv=0.0)
    _, _, _, clean, specific = fm_only(p, 2)
    unspecific = clean[0] - specific[0]
    assert np.ptp(unspecific) < 1e-3
    nuclear_free = specific[0] < 0.01 * specific[0].max()
    assert abs(pcc(clean[0][nuclear_free], specific[1][nuclear_free])) < 0.1
    _, _, _, bleed, bleed_specific = fm_only(dataclasses.replace(p, hoechst_bleed_through=0.05),
                                             2)
    assert np.array_equal(bleed_specific, specific)
    assert pcc(bleed[0][nuclear_free], bleed_specific[1][nuclear_free]) > 0.9
    added = bleed[0] - clean[0]
    assert pcc(added, bleed_specific[1]) > 0.95
    assert added.sum() / bleed_specific[1].sum() == pytest.approx(0.05, rel=0.01)
    # the default section (3 % bleed-through, RNA binding) keeps the same insulin truth
    assert section.fm_specific[1].sum() > 0


def test_aspecific_hoechst_on_exocrine_rna(section: SimulatedSection) -> None:
    p = small_params()
    hoechst = fm_on_grid(section.fm_clean[0] - section.fm_specific[0],
                         section.fm_geometry_true, section.em_geometry)
    rer = ndimage.binary_erosion(section.labels == LABELS["rough_er"], iterations=20)
    islet = ndimage.binary_erosion(np.isin(section.labels, ISLET), iterations=20)
    assert rer.sum() > 100 and islet.sum() > 100
    rna_adu = p.fm_gain_adu_per_e * p.hoechst_photons_e * p.hoechst_rna_fraction
    assert hoechst[rer].mean() > hoechst[islet].mean() + 0.3 * rna_adu
    # the RNA term alone: on the RER, not in the islet
    _, _, _, no_rna, _ = fm_only(dataclasses.replace(p, hoechst_rna_fraction=0.0), 2)
    added = fm_on_grid(section.fm_clean[0] - no_rna[0], section.fm_geometry_true,
                       section.em_geometry)
    assert added.min() > -1e-3
    assert added[rer].mean() > 0.3 * rna_adu
    assert added[islet].mean() < 0.02 * added[rer].mean()


@functools.lru_cache(maxsize=16)
def fm_only(params: SimulationParams, index: int, seed: int = SEED) -> tuple:
    """``(fm_true geometry, tissue, fm, fm_clean, fm_specific)`` without rendering the SEM."""
    _, fm_true, _, tissue = section_layout(params, index, seed)
    return (fm_true, tissue, *_simulate_fm(params, tissue, fm_true, index, seed))


def fm_pixel_cells(tissue: object, fm_true: ImageGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Owner cell and signed distance to its nuclear envelope (µm) at each FM pixel centre."""
    q = tissue.warp(tissue.stage_to_local(pixel_points_um(fm_true)))
    owner, _, _ = tissue.cells.membrane_distance(q)
    sd = tissue.cells.nucleus_distance(q, owner)
    return owner.reshape(fm_true.shape_yx), sd.reshape(fm_true.shape_yx)


def test_psf_sigma() -> None:
    assert psf_sigma_nm(SimulationParams(), 617.0) == pytest.approx(0.21 * 617 / 0.95)


# ----------------------------------------------------------------------------- geometry


def test_metadata_error_within_configured_range() -> None:
    p = small_params(em_size_px=128, fm_size_px=160)
    for index in range(12):
        em, true, meta, _ = section_layout(p, index, SEED)
        shift = np.hypot(*np.subtract(meta.centre_m, true.centre_m)) * 1e6
        assert p.fm_meta_shift_min_um - 1e-9 <= shift <= p.fm_meta_shift_max_um + 1e-9
        rot_err = (meta.rotation_rad - true.rotation_rad + math.pi) % (2 * math.pi) - math.pi
        assert abs(math.degrees(rot_err)) <= p.fm_meta_rotation_error_max_deg + 1e-9
        offset = np.hypot(*np.subtract(true.centre_m, em.centre_m)) * 1e6
        assert offset <= p.fm_centre_offset_max_um + 1e-9
        assert 0 <= meta.rotation_rad < 2 * math.pi
        nominal = p.fm_pixel_size_nm * 1e-9
        assert meta.pixel_size_m == (nominal, nominal)
        assert true.pixel_size_m[0] == true.pixel_size_m[1] == pytest.approx(
            nominal, rel=p.fm_pixel_size_error_max_frac)


def test_pixel_points_follow_the_geometry() -> None:
    g = ImageGeometry((5, 7), (2e-7, 2e-7), (1e-3, 6e-3), 0.3)
    points = pixel_points_um(g)
    assert np.allclose(points, apply_affine(g.pixel_to_stage(), grid_points((5, 7))) * 1e6)
    fine = fine_geometry(g, factor=4, margin=3)
    sub = pixel_points_um(fine).reshape(5 * 4 + 6, 7 * 4 + 6, 2)[3:-3, 3:-3]
    means = sub.reshape(5, 4, 7, 4, 2).mean(axis=(1, 3)).reshape(-1, 2)
    assert np.allclose(means, points, atol=1e-9)


def test_known_feature_appears_where_the_geometry_puts_it() -> None:
    """Nucleus centres (stage) land on nucleus pixels of the SEM and on Hoechst maxima."""
    p = small_params(membrane_waviness_um=0.0, nucleolus_probability=0.0)
    for index in range(30):  # a section whose SEM field holds a whole nucleus
        em, true, _, tissue = section_layout(p, index, SEED)
        cells = tissue.cells
        stage_um = cells.nuc_centre + tissue.origin_um
        em_px = apply_affine(em.stage_to_pixel(), stage_um * 1e-6)
        margin = (cells.nuc_axes[:, 0] * 1e-6 / em.pixel_size_m[0] + 5)[:, None]
        inside = np.all((em_px > margin) & (em_px < 512 - margin), axis=1)
        inside &= cells.nuc_axes[:, 1] > 1.0
        if inside.any():
            break
    assert inside.any()
    section = simulate_section(p, index, SEED)
    nucleus = np.isin(section.labels, [*NUCLEUS, LABELS["nuclear_envelope"]])
    components, _ = ndimage.label(nucleus)
    dna = section.fm_specific[0]
    for (x, y), stage in zip(em_px[inside], stage_um[inside], strict=True):
        row, col = round(y), round(x)
        assert nucleus[row, col]
        component = components == components[row, col]
        cy, cx = ndimage.center_of_mass(component)
        assert np.hypot(cx - x, cy - y) < 1.0  # SEM px
        fx, fy = apply_affine(true.stage_to_pixel(), stage * 1e-6)
        r0, c0 = round(fy), round(fx)
        window = dna[r0 - 30:r0 + 31, c0 - 30:c0 + 31]
        mask, _ = ndimage.label(window > 0.5 * dna[r0, c0])
        mask = ndimage.binary_fill_holes(mask == mask[30, 30])
        my, mx = ndimage.center_of_mass(mask)
        assert np.hypot(mx - 30 - (fx - c0), my - 30 - (fy - r0)) < 0.5  # FM px


def _dna_proxy(labels: np.ndarray, factor: int) -> np.ndarray:
    """Expected DNA density from SEM labels, block-averaged by ``factor``."""
    p = SimulationParams()
    dna = np.zeros(labels.shape)
    dna[np.isin(labels, [LABELS["euchromatin"], LABELS["nuclear_envelope"]])] = 1.0
    dna[labels == LABELS["heterochromatin"]] = p.heterochromatin_dna_ratio
    dna[labels == LABELS["nucleolus"]] = p.nucleolus_dna_ratio
    n = labels.shape[0] // factor
    return dna[:n * factor, :n * factor].reshape(n, factor, n, factor).mean(axis=(1, 3))


def _shift_px(reference: np.ndarray, moved: np.ndarray, reach: int = 12) -> np.ndarray:
    """Sub-pixel (dx, dy) with ``moved(x) ≈ reference(x - shift)`` (parabolic peak fit)."""
    a = reference - reference.mean()
    b = moved - moved.mean()
    corr = np.fft.irfft2(np.fft.rfft2(b) * np.conj(np.fft.rfft2(a)), s=a.shape)
    corr = np.fft.fftshift(corr)
    cy, cx = np.array(a.shape) // 2
    window = corr[cy - reach:cy + reach + 1, cx - reach:cx + reach + 1]
    iy, ix = np.unravel_index(np.argmax(window), window.shape)

    def vertex(m: float, c: float, p: float) -> float:
        return 0.5 * (m - p) / (m - 2 * c + p)

    dy = iy - reach + vertex(window[iy - 1, ix], window[iy, ix], window[iy + 1, ix])
    dx = ix - reach + vertex(window[iy, ix - 1], window[iy, ix], window[iy, ix + 1])
    return np.array([dx, dy])


def test_fm_aligns_with_em_through_true_geometry(section: SimulatedSection) -> None:
    """DNA seen by the SEM and by the FM coincide via the true geometry (not via metadata)."""
    factor = 4  # 100 nm grid
    em = section.em_geometry
    grid = ImageGeometry((em.shape_yx[0] // factor,) * 2,
                         (em.pixel_size_m[0] * factor,) * 2, em.centre_m)
    pitch_nm = grid.pixel_size_m[0] * 1e9
    proxy = ndimage.gaussian_filter(
        _dna_proxy(section.labels, factor),
        psf_sigma_nm(SimulationParams(), 450.0) / pitch_nm)
    true = fm_on_grid(section.fm_specific[0], section.fm_geometry_true, grid)
    shift_true = _shift_px(proxy, true) * pitch_nm
    assert pcc(proxy, true) > 0.9
    assert np.hypot(*shift_true) < 10.0  # nm
    meta = fm_on_grid(section.fm_specific[0], section.fm_geometry_meta, grid)
    shift_meta = _shift_px(proxy, meta) * pitch_nm
    error = np.subtract(section.fm_geometry_meta.centre_m, section.fm_geometry_true.centre_m)
    expected = np.array([error[0], -error[1]]) * 1e9  # stage Y up, rows down
    assert np.hypot(*(shift_meta - expected)) < 60.0  # nm (rotation error adds a little)


# ----------------------------------------------------------------------------- FM realism


def _per_nucleus_ratio(spec: np.ndarray, proxy: np.ndarray, owner: np.ndarray,
                       interior: np.ndarray) -> dict[int, float]:
    """Mean Hoechst over each nucleus interior / its mean DNA content (label proxy)."""
    return {int(c): spec[interior & (owner == c)].mean() / proxy[interior & (owner == c)].mean()
            for c in np.unique(owner[interior]) if (interior & (owner == c)).sum() >= 20}


def test_hoechst_staining_varies_per_nucleus_only_with_cv() -> None:
    """Per-nucleus Hoechst / DNA content (from SEM labels) is constant at CV 0, varies at CV>0
    by exactly the nucleus's staining factor, and the tissue itself does not change."""
    base = {"fm_vignetting_corner_ratio": 1.0}  # (defocus of this section: 11 nm)
    flat, varied = small_params(**base, hoechst_nucleus_cv=0.0), small_params(**base)
    fm_true, t_flat, _, _, spec_flat = fm_only(flat, 2)
    _, t_var, _, _, spec_var = fm_only(varied, 2)
    assert np.array_equal(t_flat.cells.nuc_axes, t_var.cells.nuc_axes)
    assert np.array_equal(t_flat.organelles.centre, t_var.organelles.centre)
    assert np.all(t_flat.labelling.hoechst_nucleus == 1.0)
    # DNA content proxy from the tissue classes the SEM shows, rendered at 26.6 nm and blurred
    sub = 4
    labels = t_flat.render(fine_geometry(fm_true, sub, 0), em=True)["label"]
    p = SimulationParams()
    dna = np.isin(labels, [LABELS["euchromatin"], LABELS["nuclear_envelope"]]).astype(float)
    dna += p.heterochromatin_dna_ratio * (labels == LABELS["heterochromatin"])
    dna += p.nucleolus_dna_ratio * (labels == LABELS["nucleolus"])
    dna = ndimage.gaussian_filter(dna, psf_sigma_nm(p, 450.0) / (106.4 / sub))
    n = fm_true.shape_yx[0]
    proxy = dna.reshape(n, sub, n, sub).mean(axis=(1, 3))
    owner, sd = fm_pixel_cells(t_flat, fm_true)
    interior = sd < -0.4  # µm: > 3 PSF sigma inside the envelope
    r_flat = _per_nucleus_ratio(spec_flat[0], proxy, owner, interior)
    r_var = _per_nucleus_ratio(spec_var[0], proxy, owner, interior)
    assert len(r_flat) >= 4
    flat_values = np.array(list(r_flat.values()))
    assert flat_values.std() / flat_values.mean() < 0.06  # SEM labels predict the staining
    factors = t_var.labelling.hoechst_nucleus
    relative = np.array([r_var[c] / r_flat[c] for c in r_flat])
    assert relative == pytest.approx(factors[list(r_flat)], rel=1e-3)
    var_values = np.array(list(r_var.values()))
    assert var_values.std() / var_values.mean() > 0.12
    # the factors over all the section's cells: lognormal, mean 1, CV 0.3
    assert factors.mean() == pytest.approx(1.0, abs=0.1)
    assert factors.std() / factors.mean() == pytest.approx(varied.hoechst_nucleus_cv, abs=0.1)
    assert np.all(factors > 0)


def test_insulin_labelling_per_cell_and_per_granule() -> None:
    p = small_params()
    _, _, _, tissue = section_layout(p, 2, SEED)
    org, lab = tissue.organelles, tissue.labelling
    insulin = np.flatnonzero((org.kind == _INSULIN) & (org.core_radius > 0.02))
    assert len(insulin) > 100
    # the true insulin density at each dense-core centre is the granule's total factor
    core = org.centre[insulin] + org.core_offset[insulin] + tissue.origin_um
    density = tissue.sample(core, 0.005, em=False)["insulin"]
    assert density == pytest.approx(lab.insulin_organelle[insulin], rel=1e-5)
    host, _, _ = tissue.cells.membrane_distance(tissue.warp(org.centre[insulin]))
    assert np.all(tissue.cells.kind[host] == _BETA)
    assert lab.insulin_organelle[insulin] == pytest.approx(
        lab.insulin_cell[host] * lab.insulin_granule[insulin], rel=1e-12)
    granule = lab.insulin_granule[insulin]
    assert granule.std() / granule.mean() == pytest.approx(p.insulin_granule_cv, abs=0.1)
    assert lab.insulin_cell.std() / lab.insulin_cell.mean() == pytest.approx(
        p.insulin_cell_cv, abs=0.12)
    assert len(np.unique(lab.insulin_cell[host])) >= 4  # several beta cells, each its own
    # without variability every exposed core has density 1; the tissue is the same
    _, _, _, uniform = section_layout(
        small_params(insulin_cell_cv=0.0, insulin_granule_cv=0.0), 2, SEED)
    assert np.array_equal(uniform.organelles.centre, org.centre)
    assert np.all(uniform.labelling.insulin_organelle == 1.0)
    assert uniform.sample(core, 0.005, em=False)["insulin"] == pytest.approx(1.0, rel=1e-6)


def test_vignetting_matches_the_corner_ratio() -> None:
    """A uniform fluorescent background shows the illumination profile; the offset does not."""
    only_background = {"hoechst_photons_e": 0.0, "insulin_photons_e": 0.0,
                       "hoechst_autofluorescence_e": 0.0, "insulin_autofluorescence_e": 0.0,
                       "fm_section_brightness_cv": 0.0, "fm_vignetting_corner_ratio": 0.6}
    p = small_params(**only_background, fm_illumination_offset_max_frac=0.0,
                     em_size_px=128, fm_size_px=96)
    _, _, _, clean, spec = fm_only(p, 2)
    assert np.all(spec == 0.0)
    for c, background in enumerate((p.hoechst_background_e, p.insulin_background_e)):
        signal = (clean[c] - p.fm_camera_offset_adu) / (p.fm_gain_adu_per_e * background)
        assert signal.max() == pytest.approx(1.0, abs=1e-3)  # centre
        corners = signal[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners == pytest.approx(0.6, abs=0.01)
        assert signal[48, 0] == pytest.approx(0.6 ** 0.5, abs=0.01)  # edge middle: r² = R²/2
    # an off-centre illumination: the maximum sits where the acquisition says
    moved = small_params(**only_background, fm_illumination_offset_max_frac=0.8)
    for index in range(5):
        acquisition = section_fm_acquisition(moved, index, SEED)
        profile = illumination_profile(moved, acquisition, (192, 192))
        peak = np.unravel_index(np.argmax(profile), profile.shape)
        cx, cy = acquisition.illumination_centre_um
        assert 0 < np.hypot(cx, cy) <= 0.8 * 192 * 0.1064 / 2
        expected = np.array([cy, cx]) / 0.1064 + 95.5  # rows, cols
        assert np.abs(np.array(peak) - expected).max() <= 0.5, index
    # the specific label is vignetted too: same section with and without vignetting
    p = small_params()
    _, _, _, clean, spec = fm_only(p, 2)
    _, _, _, clean_flat, spec_flat = fm_only(small_params(fm_vignetting_corner_ratio=1.0), 2)
    profile = illumination_profile(p, section_fm_acquisition(p, 2, SEED), spec.shape[1:])
    assert profile.min() < 0.85
    offset = p.fm_camera_offset_adu
    for c in range(2):
        lit = spec_flat[c] > 1.0
        assert spec[c][lit] / spec_flat[c][lit] == pytest.approx(profile[lit], rel=1e-4)
        assert (clean[c] - offset) / (clean_flat[c] - offset) == pytest.approx(profile,
                                                                              rel=1e-4)


def test_autofluorescence_is_not_specific() -> None:
    p = small_params()
    fm_true, tissue, _, clean, spec = fm_only(p, 2)
    _, _, _, clean0, spec0 = fm_only(
        small_params(hoechst_autofluorescence_e=0.0, insulin_autofluorescence_e=0.0), 2)
    assert np.array_equal(spec, spec0)
    added = clean - clean0
    assert added.min() > -1e-3
    assert pcc(added[0], added[1]) > 0.95  # same tissue source, both channels
    labels = tissue.render(fm_true, em=True)["label"]
    zymogen = labels == LABELS["zymogen_granule"]
    beta = labels == LABELS["beta_cytoplasm"]
    resin = ndimage.binary_erosion(labels == LABELS["extracellular"], iterations=3)
    assert zymogen.sum() > 50 and beta.sum() > 50
    for c in range(2):
        assert added[c][zymogen].mean() > 1.5 * added[c][beta].mean() > 0
        if resin.any():
            assert added[c][resin].mean() < 0.5 * added[c][beta].mean()


def test_default_noise_ceiling_is_thin_section_like() -> None:
    """Thin-section photon budget: the noise ceiling is well below 1 but not hopeless."""
    p = SimulationParams()
    for index in range(3):
        _, _, fm, clean, _ = fm_only(p, index, 42)
        hoechst, insulin = pcc(fm[0], clean[0]), pcc(fm[1], clean[1])
        assert 0.75 < hoechst < 0.92, (index, hoechst)
        assert 0.80 < insulin < 0.95, (index, insulin)


def test_section_brightness_varies_between_sections() -> None:
    p = small_params()
    draws = np.array([section_fm_acquisition(p, i, SEED).brightness for i in range(40)])
    assert len(np.unique(draws)) == draws.size  # every section and channel its own
    sigma = math.sqrt(math.log1p(p.fm_section_brightness_cv ** 2))
    assert np.log(draws).std() == pytest.approx(sigma, abs=0.06)
    assert np.all(np.array([section_fm_acquisition(small_params(fm_section_brightness_cv=0.0),
                                                   i, SEED).brightness for i in range(5)]) == 1)
    # the factor scales every fluorescence signal of the channel, not the camera offset
    _, _, _, clean, spec = fm_only(p, 2)
    _, _, _, clean1, spec1 = fm_only(small_params(fm_section_brightness_cv=0.0), 2)
    offset = p.fm_camera_offset_adu
    for c, factor in enumerate(section_fm_acquisition(p, 2, SEED).brightness):
        lit = spec1[c] > 1.0
        assert spec[c][lit] / spec1[c][lit] == pytest.approx(factor, rel=1e-4)
        assert (clean[c] - offset) / (clean1[c] - offset) == pytest.approx(factor, rel=1e-4)


def test_defocus_blurs_the_section() -> None:
    base = {"fm_vignetting_corner_ratio": 1.0}  # shares a render with the Hoechst test
    sharp_p = small_params(**base)
    blurred_p = small_params(**base, fm_defocus_sigma_max_nm=1000.0)
    sharp_nm = section_fm_acquisition(sharp_p, 2, SEED).defocus_sigma_nm
    blurred_nm = section_fm_acquisition(blurred_p, 2, SEED).defocus_sigma_nm
    # one uniform draw × max: 11 nm and 180 nm for this section
    assert blurred_nm / 1000.0 == pytest.approx(sharp_nm / sharp_p.fm_defocus_sigma_max_nm)
    assert 150.0 < blurred_nm <= 1000.0
    assert section_fm_acquisition(small_params(fm_defocus_sigma_max_nm=0.0), 2,
                                  SEED).defocus_sigma_nm == 0.0
    defocus_nm = math.sqrt(blurred_nm**2 - sharp_nm**2)
    _, _, _, _, sharp = fm_only(sharp_p, 2)
    _, _, _, _, blurred = fm_only(blurred_p, 2)

    def roughness(image: np.ndarray) -> float:
        return float(np.mean(np.diff(image, axis=0) ** 2) + np.mean(np.diff(image, axis=1) ** 2))

    inner = (slice(10, -10), slice(10, -10))
    for c in range(2):
        assert roughness(blurred[c]) < 0.7 * roughness(sharp[c])
        # Gaussian blurs add in quadrature: sharp ⊛ defocus ≈ blurred
        model = ndimage.gaussian_filter(sharp[c], defocus_nm / 106.4, mode="nearest")
        assert pcc(blurred[c][inner], model[inner]) > 0.995
        assert pcc(blurred[c][inner], model[inner]) > pcc(blurred[c][inner], sharp[c][inner])
        assert blurred[c][inner].sum() == pytest.approx(sharp[c][inner].sum(), rel=0.02)


def test_fm_parameters_change_neither_tissue_nor_sem() -> None:
    p = small_params(em_size_px=128, fm_size_px=96)
    fm_changes = {"hoechst_photons_e": 40.0, "insulin_photons_e": 500.0,
                  "hoechst_nucleus_cv": 0.6, "insulin_cell_cv": 0.1, "insulin_granule_cv": 0.9,
                  "hoechst_autofluorescence_e": 5.0, "zymogen_autofluorescence_ratio": 6.0,
                  "fm_vignetting_corner_ratio": 0.4, "fm_illumination_offset_max_frac": 0.9,
                  "fm_section_brightness_cv": 0.5, "fm_defocus_sigma_max_nm": 200.0,
                  "hoechst_stained_nucleus_fraction": 0.3}
    a = simulate_section(p, 1, SEED)
    b = simulate_section(dataclasses.replace(p, **fm_changes), 1, SEED)
    for name in ("em", "em_clean", "labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.fm_geometry_true == b.fm_geometry_true and a.fm_geometry_meta == b.fm_geometry_meta
    assert not np.array_equal(a.fm_specific, b.fm_specific)
    truth = truth_metadata(a, p, 1, SEED)
    assert truth["fm_acquisition"] == section_fm_acquisition(p, 1, SEED).as_dict()
    expected = moving_to_fixed_px(a.fm_geometry_true, a.em_geometry)
    assert np.allclose(truth["fm_to_em_px"], expected)


# ----------------------------------------------------------------------------- hard cases


def _scale(matrix: object) -> float:
    """Isotropic scale of a 3×3 affine (FM px → EM px)."""
    return math.sqrt(abs(np.linalg.det(np.asarray(matrix, float)[:2, :2])))


def test_fm_pixel_size_calibration_error(section: SimulatedSection) -> None:
    """The true FM pixel size is off by the drawn factor; metadata and export keep the nominal."""
    p = small_params()
    nominal = p.fm_pixel_size_nm * 1e-9
    truth = truth_metadata(section, p, 2, SEED)
    u = truth["fm_pixel_size_error_frac"]
    assert 0 < abs(u) <= p.fm_pixel_size_error_max_frac
    assert _scale(truth["fm_to_em_px"]) / _scale(truth["fm_to_em_px_metadata"]) == (
        pytest.approx(1 + u, rel=1e-9))
    assert _scale(truth["fm_to_em_px"]) == pytest.approx(
        nominal * (1 + u) / section.em_geometry.pixel_size_m[0], rel=1e-9)
    assert section.fm_geometry_meta.pixel_size_m == (nominal, nominal)
    assert odemis_images(section, p, 2)[0].pixel_size_m == (nominal, nominal)
    assert truth["fm_geometry_true"]["pixel_size_m"][0] == pytest.approx(nominal * (1 + u))

    # u is uniform in ±max and drawn last: the other draws do not depend on it
    em = section_em_geometry(p, 0)
    zero = dataclasses.replace(p, fm_pixel_size_error_max_frac=0.0)
    big = dataclasses.replace(p, fm_pixel_size_error_max_frac=0.05)
    errors = []
    for i in range(200):
        true0, meta0 = _fm_geometries(zero, em, np.random.default_rng(i))
        true1, meta1 = _fm_geometries(big, em, np.random.default_rng(i))
        assert true0.pixel_size_m == meta0.pixel_size_m == meta1.pixel_size_m == (
            nominal, nominal)
        assert meta1 == meta0
        assert (true1.centre_m, true1.rotation_rad) == (true0.centre_m, true0.rotation_rad)
        errors.append(true1.pixel_size_m[0] / nominal - 1)
    assert max(np.abs(errors)) <= 0.05 and min(errors) < -0.04 and max(errors) > 0.04


def test_fm_pixel_size_error_changes_neither_tissue_nor_sem() -> None:
    p = small_params(em_size_px=128, fm_size_px=96, fm_pixel_size_error_max_frac=0.0)
    a = simulate_section(p, 1, SEED)
    b = simulate_section(dataclasses.replace(p, fm_pixel_size_error_max_frac=0.05), 1, SEED)
    for name in ("em", "em_clean", "labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.fm_geometry_meta == b.fm_geometry_meta
    assert a.fm_geometry_true.pixel_size_m != b.fm_geometry_true.pixel_size_m
    assert not np.array_equal(a.fm_specific, b.fm_specific)


def test_sparse_hoechst_staining() -> None:
    """With fraction 0.2, about 20 % of nuclei carry Hoechst DNA signal; RNA is unchanged."""
    sparse = small_params(hoechst_stained_nucleus_fraction=0.2)
    stained = []
    for index in range(3):
        _, _, _, tissue = section_layout(sparse, index, SEED)
        has_nucleus = tissue.cells.nuc_axes[:, 0] > 0
        lab = tissue.labelling
        assert np.all(lab.hoechst_nucleus[~lab.hoechst_stained] == 0)
        assert np.all(lab.hoechst_nucleus[lab.hoechst_stained] > 0)
        stained.extend(lab.hoechst_stained[has_nucleus])
    assert len(stained) > 100
    assert np.mean(stained) == pytest.approx(0.2, abs=0.08)

    # the rendered DNA density: unstained nuclei have none, stained ones are unchanged
    seen = set()
    for index in range(3):
        em, _, _, full = section_layout(small_params(), index, SEED)
        _, _, _, tissue = section_layout(sparse, index, SEED)
        grid = ImageGeometry((100, 100), (200e-9, 200e-9), em.centre_m)  # 20 µm
        a, b = full.render(grid, em=False), tissue.render(grid, em=False)
        owner = tissue.cells.membrane_distance(
            tissue.warp(tissue.stage_to_local(pixel_points_um(grid))))[0].reshape(100, 100)
        on = tissue.labelling.hoechst_stained[owner]
        assert np.all(full.labelling.hoechst_stained)
        assert np.array_equal(b["dna"][on], a["dna"][on]) and np.all(b["dna"][~on] == 0)
        seen |= {"unstained"} if (a["dna"][~on] > 0).any() else set()
        seen |= {"stained"} if (b["dna"][on] > 0).any() else set()
        for key in ("rna", "insulin", "autofluorescence"):
            assert np.array_equal(a[key], b[key]), key
        if seen == {"stained", "unstained"}:
            break
    assert seen == {"stained", "unstained"}


def test_em_chromatin_contrast() -> None:
    """With contrast 0 the nuclei's mean SEM signal is that of the cytoplasm around them."""
    nucleus_labels = [LABELS["euchromatin"], LABELS["heterochromatin"]]
    cytoplasm_labels = [LABELS[k] for k in ("acinar_cytoplasm", "beta_cytoplasm",
                                            "alpha_cytoplasm")]
    results = {}
    for contrast in (0.0, 1.0):
        p = small_params(em_chromatin_contrast=contrast)
        em, _, _, tissue = section_layout(p, 5, SEED)  # a section with three nuclei
        grid = ImageGeometry((256, 256), (50e-9, 50e-9), em.centre_m)
        rendered = tissue.render(grid, em=True)
        adu = p.em_resin_level_adu + (p.em_stain_level_adu - p.em_resin_level_adu) * rendered[
            "stain"]
        label = rendered["label"]
        near_nucleus = ndimage.binary_dilation(
            np.isin(label, [*nucleus_labels, LABELS["nuclear_envelope"], LABELS["nucleolus"]]),
            iterations=3)
        nuclei, n = ndimage.label(ndimage.binary_erosion(np.isin(label, nucleus_labels),
                                                         iterations=2))
        diffs = []
        for i in range(1, n + 1):
            nucleus = nuclei == i
            ring = (ndimage.binary_dilation(nucleus, iterations=12)
                    & np.isin(label, cytoplasm_labels) & ~near_nucleus)
            if nucleus.sum() >= 50 and ring.sum() >= 50:
                diffs.append(adu[nucleus].mean() - adu[ring].mean())
        results[contrast] = (np.abs(diffs), label, adu)
    (flat, label0, adu0), (normal, label1, adu1) = results[0.0], results[1.0]
    assert len(flat) >= 2
    assert np.array_equal(label0, label1)  # the structure does not change
    outside = ~np.isin(label0, nucleus_labels) & ~ndimage.binary_dilation(
        np.isin(label0, nucleus_labels), iterations=2)
    assert np.array_equal(adu0[outside], adu1[outside])
    assert flat.max() < 300  # ADU, 1 % of the stain range
    assert normal.max() > 1500
