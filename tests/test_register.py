import json
import math

import numpy as np
import pytest

from em2fm import io, register
from em2fm.evaluate import em_field_fm_pixels, rms_error_nm
from em2fm.geometry import ImageGeometry, apply_affine, grid_points, moving_to_fixed_px
from em2fm.register import RegistrationParams, register_images


def render(geom: ImageGeometry, blobs: np.ndarray, sigma_m: float) -> np.ndarray:
    """Sum of Gaussian blobs (stage x, y, amplitude) sampled at the pixels of ``geom``."""
    pts = apply_affine(geom.pixel_to_stage(), grid_points(geom.shape_yx))
    out = np.zeros(len(pts))
    for x, y, a in blobs:
        out += a * np.exp(-((pts[:, 0] - x) ** 2 + (pts[:, 1] - y) ** 2) / (2 * sigma_m**2))
    return out.reshape(geom.shape_yx)


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    centre = np.array([1e-3, 2e-3])
    blobs = np.column_stack([centre[0] + rng.uniform(-9e-6, 9e-6, 90),
                             centre[1] + rng.uniform(-9e-6, 9e-6, 90),
                             rng.uniform(0.3, 1.0, 90)])
    em_geom = ImageGeometry((400, 400), (25e-9, 25e-9), tuple(centre))
    fm_true = ImageGeometry((160, 160), (100e-9, 100e-9), (centre[0] + 1e-6, centre[1] - 5e-7),
                            rotation_rad=math.radians(5))
    fm_meta = ImageGeometry(fm_true.shape_yx, fm_true.pixel_size_m,
                            (fm_true.centre_m[0] + 4e-7, fm_true.centre_m[1] - 6e-7),
                            rotation_rad=fm_true.rotation_rad + math.radians(0.25))
    em = 1000 + 3000 * render(em_geom, blobs, 120e-9) + rng.normal(0, 150, em_geom.shape_yx)
    fm = 200 + 800 * render(fm_true, blobs, 180e-9) + rng.normal(0, 20, fm_true.shape_yx)
    return em.astype(np.float32), em_geom, fm.astype(np.float32), fm_true, fm_meta


def _error_nm(m, pair) -> float:
    _, em_geom, _, fm_true, _ = pair
    truth = moving_to_fixed_px(fm_true, em_geom)
    pts = em_field_fm_pixels(fm_true.shape_yx, truth, em_geom.shape_yx)
    return rms_error_nm(m, truth, pts, em_geom.pixel_size_m[0])


def test_recovers_a_known_misalignment(pair):
    em, em_geom, fm, _, fm_meta = pair
    result = register_images(em, em_geom, fm, fm_meta, RegistrationParams(pixel_size_nm=50))
    before = _error_nm(result.fm_to_em_px_metadata, pair)
    after = _error_nm(result.fm_to_em_px, pair)
    assert before > 600  # the stage metadata is off by 0.72 µm and 0.25°
    assert after < 15, f"registration error {after:.0f} nm"
    assert result.metric_registered < result.metric_metadata
    assert not result.warnings


def test_same_input_same_result(pair):
    em, em_geom, fm, _, fm_meta = pair
    a = register_images(em, em_geom, fm, fm_meta)
    b = register_images(em, em_geom, fm, fm_meta)
    np.testing.assert_array_equal(a.fm_to_em_px, b.fm_to_em_px)


def test_similarity_transform_option(pair):
    em, em_geom, fm, _, fm_meta = pair
    result = register_images(em, em_geom, fm, fm_meta, RegistrationParams(transform="similarity"))
    assert _error_nm(result.fm_to_em_px, pair) < 60


def test_unrelated_images_keep_the_metadata(pair):
    em, em_geom, fm, _, fm_meta = pair
    noise = np.random.default_rng(1).normal(size=fm.shape).astype(np.float32)
    result = register_images(em, em_geom, noise, fm_meta,
                             RegistrationParams(max_shift_um=0.4, iterations=20))
    if result.warnings:  # MI did not improve: the metadata transform is kept
        np.testing.assert_array_equal(result.fm_to_em_px, result.fm_to_em_px_metadata)


def test_run_writes_json_and_overlay(pair, tmp_path):
    em, em_geom, fm, _, fm_meta = pair
    meta = {"section": "S1",
            "em": {"shape": list(em.shape), "pixel_size_m": list(em_geom.pixel_size_m),
                   "centre_m": list(em_geom.centre_m), "rotation_rad": 0.0},
            "fm": {"shape": [1, *fm.shape], "pixel_size_m": list(fm_meta.pixel_size_m),
                   "centre_m": list(fm_meta.centre_m), "rotation_rad": fm_meta.rotation_rad,
                   "channels": [{"name": "Hoechst"}]}}
    io.write_json(tmp_path / "S1.json", meta)
    io.save_npz(tmp_path / "S1.npz", em=em, fm=fm[None])
    out = register.run(tmp_path / "S1.json", tmp_path / "S1.npz", None, {"transform": "rigid"},
                       7, tmp_path / "reg.json", tmp_path / "reg.png")
    data = json.loads((tmp_path / "reg.json").read_text())
    assert np.asarray(data["fm_to_em_px"]).shape == (3, 3)
    assert data["channel"] == "Hoechst" and out["params"]["seed"] == 7
    # the correction undoes the metadata error (+0.4 µm x, -0.6 µm y)
    assert data["correction"]["shift_nm"] == pytest.approx([-400, 600], abs=40)
    assert (tmp_path / "reg.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not among"):
        register.run(tmp_path / "S1.json", tmp_path / "S1.npz", "GFP", {}, 0,
                     tmp_path / "x.json", tmp_path / "x.png")
