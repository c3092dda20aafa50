import dataclasses
import json
import math

import numpy as np
import pytest

from em2fm import io, register, train
from em2fm.evaluate import rms_error_nm
from em2fm.geometry import (
    ImageGeometry,
    apply_affine,
    em_field_fm_pixels,
    geometry_from_meta,
    grid_points,
    moving_to_fixed_px,
)
from em2fm.register import CaptureRange, RegistrationParams, StatusParams, register_images
from em2fm.register.landscape import (
    analyse,
    bound_violations,
    correction_summary,
    rms_difference_px,
    similarity_about,
)
from em2fm.register.refine import refine_to_prediction
from em2fm.register.status import multimodal_status, refine_status, use_for_training
from em2fm.tiles import make_grid, registered_fm

CENTRE = np.array([1e-3, 2e-3])


def render(geom: ImageGeometry, blobs: np.ndarray, sigma_m: float) -> np.ndarray:
    """Sum of Gaussian blobs (stage x, y, amplitude) sampled at the pixels of ``geom``."""
    pts = apply_affine(geom.pixel_to_stage(), grid_points(geom.shape_yx))
    out = np.zeros(len(pts))
    for x, y, a in blobs:
        out += a * np.exp(-((pts[:, 0] - x) ** 2 + (pts[:, 1] - y) ** 2) / (2 * sigma_m**2))
    return out.reshape(geom.shape_yx)


def random_blobs(seed: int = 3, n: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([CENTRE[0] + rng.uniform(-9e-6, 9e-6, n),
                            CENTRE[1] + rng.uniform(-9e-6, 9e-6, n), rng.uniform(0.3, 1.0, n)])


def lattice_blobs(period_m: float = 1.2e-6) -> np.ndarray:
    """A perfectly periodic pattern: every lattice shift matches equally well."""
    k = np.arange(-9, 10) * period_m
    xx, yy = np.meshgrid(CENTRE[0] + k, CENTRE[1] + k)
    return np.column_stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])


def make_pair(blobs: np.ndarray, meta_shift_m=(4e-7, -6e-7), meta_rot_deg: float = 0.25,
              scale_error: float = 0.0, seed: int = 3):
    """EM and FM of the same blobs; the FM metadata is off by a shift, rotation and scale."""
    rng = np.random.default_rng(seed)
    em_geom = ImageGeometry((400, 400), (25e-9, 25e-9), tuple(CENTRE))
    px = 100e-9 * (1 + scale_error)
    fm_true = ImageGeometry((160, 160), (px, px), (CENTRE[0] + 1e-6, CENTRE[1] - 5e-7),
                            rotation_rad=math.radians(5))
    fm_meta = ImageGeometry(fm_true.shape_yx, (100e-9, 100e-9),
                            (fm_true.centre_m[0] + meta_shift_m[0],
                             fm_true.centre_m[1] + meta_shift_m[1]),
                            rotation_rad=fm_true.rotation_rad + math.radians(meta_rot_deg))
    em = 1000 + 3000 * render(em_geom, blobs, 120e-9) + rng.normal(0, 150, em_geom.shape_yx)
    fm = 200 + 800 * render(fm_true, blobs, 180e-9) + rng.normal(0, 20, fm_true.shape_yx)
    return em.astype(np.float32), em_geom, fm.astype(np.float32), fm_true, fm_meta


@pytest.fixture(scope="module")
def pair():
    return make_pair(random_blobs(), scale_error=0.01)


def _truth(pair) -> tuple[np.ndarray, np.ndarray]:
    _, em_geom, _, fm_true, _ = pair
    truth = moving_to_fixed_px(fm_true, em_geom)
    return truth, em_field_fm_pixels(fm_true.shape_yx, truth, em_geom.shape_yx)


def _error_fm_px(m, pair) -> float:
    truth, pts = _truth(pair)
    return rms_difference_px(m, truth, pts)


def test_recovers_shift_rotation_and_scale(pair):
    em, em_geom, fm, _, fm_meta = pair
    result = register_images(em, em_geom, fm, fm_meta, RegistrationParams(pixel_size_nm=50))
    assert _error_fm_px(result.fm_to_em_px_metadata, pair) > 6  # 0.72 µm, 0.25°, 1 %
    assert _error_fm_px(result.fm_to_em_px, pair) < 0.25
    corr = result.correction(em_geom.shape_yx, em_geom.pixel_size_m[0])
    assert corr["scale_error"] == pytest.approx(0.01, abs=0.002)
    assert corr["rotation_deg"] == pytest.approx(-0.25, abs=0.05)
    assert result.metric_registered < result.metric_metadata
    assert not result.bound_violations and not result.warnings
    status, reasons = multimodal_status(result.bound_violations, result.warnings,
                                        result.landscape.second_peak_ratio, StatusParams())
    assert status == "ok", reasons


def test_rigid_cannot_absorb_a_calibration_error(pair):
    em, em_geom, fm, _, fm_meta = pair
    rigid = register_images(em, em_geom, fm, fm_meta, RegistrationParams(transform="rigid"))
    similarity = register_images(em, em_geom, fm, fm_meta, RegistrationParams())
    assert _error_fm_px(similarity.fm_to_em_px, pair) < _error_fm_px(rigid.fm_to_em_px, pair)


def test_same_input_same_result(pair):
    em, em_geom, fm, _, fm_meta = pair
    a = register_images(em, em_geom, fm, fm_meta)
    b = register_images(em, em_geom, fm, fm_meta)
    np.testing.assert_array_equal(a.fm_to_em_px, b.fm_to_em_px)


def test_an_offset_beyond_the_capture_range_fails():
    em, em_geom, fm, _, fm_meta = make_pair(random_blobs(), meta_shift_m=(1.25e-6, 0.0))
    result = register_images(em, em_geom, fm, fm_meta, RegistrationParams(max_shift_um=1.0))
    assert result.bound_violations, "an optimum on the bound must be reported"
    status, _ = multimodal_status(result.bound_violations, result.warnings,
                                  result.landscape.second_peak_ratio, StatusParams())
    assert status == "failed"


def test_a_periodic_pattern_is_never_ok():
    """Every lattice shift matches: the metric's optimum may be wrong, and must be flagged."""
    em, em_geom, fm, _, fm_meta = make_pair(lattice_blobs(), meta_shift_m=(3e-7, 2e-7))
    result = register_images(em, em_geom, fm, fm_meta)
    assert result.landscape.second_peak_ratio > 0.9
    status, reasons = multimodal_status(result.bound_violations, result.warnings,
                                        result.landscape.second_peak_ratio, StatusParams())
    assert status != "ok" and reasons


def test_landscape_evidence():
    y, x = np.mgrid[-5:6, -5:6]
    single = -np.exp(-(x**2 + y**2) / 2.0)
    one = analyse(single, 0.2)
    assert one.second_peak_ratio < 0.1 and not one.on_edge
    assert one.best_shift_um == (0.0, 0.0)
    double = single - np.exp(-((x - 5) ** 2 + y**2) / 2.0)
    assert analyse(double, 0.2).second_peak_ratio > 0.9
    edge = -np.exp(-((x - 5) ** 2 + y**2) / 2.0)
    assert analyse(edge, 0.2).on_edge


def test_capture_range_rule():
    capture = CaptureRange(max_shift_um=2.0, max_rotation_deg=2.0, max_scale=0.02)
    meta = np.eye(3)
    centre = np.array([199.5, 199.5])
    inside = similarity_about(centre, (40.0, -20.0), math.radians(1.0), 1.01)
    s = correction_summary(inside @ meta, meta, (400, 400), 25e-9)
    assert s["shift_nm"] == pytest.approx([1000.0, 500.0])
    assert s["rotation_deg"] == pytest.approx(-1.0)
    assert s["scale_error"] == pytest.approx(0.01)
    assert bound_violations(s, capture) == []
    for bad in (similarity_about(centre, (80.0, 0.0), 0.0, 1.0),
                similarity_about(centre, (0.0, 0.0), math.radians(2.5), 1.0),
                similarity_about(centre, (0.0, 0.0), 0.0, 0.975)):
        assert bound_violations(correction_summary(bad, meta, (400, 400), 25e-9), capture)


def test_refine_status_rules():
    p = StatusParams()
    assert refine_status("ok", "ok", 0.8, 0.3, [], 0.3, p)[:2] == ("ok", True)
    assert refine_status("low_confidence", "low_confidence", 0.8, 0.3, [], 0.4, p)[0] == "ok"
    status, used, reasons = refine_status("ok", "ok", 0.8, 0.3, [], 2.5, p)
    assert status == "low_confidence" and used and "disagree" in reasons[0]
    assert refine_status("failed", "failed", 0.8, 0.3, [], None, p)[0] == "low_confidence"
    assert refine_status("failed", "failed", 0.8, 0.3, [], None, p, accepted=False)[:2] == (
        "failed", False)  # no better than the metadata: still failed
    status, used, _ = refine_status("ok", "ok", 0.05, 0.3, [], 0.2, p)
    assert status == "low_confidence" and not used  # inconclusive: ok is not confirmed
    status, used, _ = refine_status("ok", "ok", 0.05, 0.3, [], 0.2, p, previous_confirmed=True)
    assert status == "ok" and not used  # confirmed by an earlier round: it stands
    assert not refine_status("ok", "ok", 0.8, 0.3, ["shift at bound"], 0.2, p)[1]
    assert use_for_training("ok", p) and not use_for_training("low_confidence", p)
    assert not use_for_training("failed", p)
    assert use_for_training("failed", dataclasses.replace(p, on_failure="metadata"))
    with pytest.raises(ValueError, match="on_failure"):
        StatusParams(on_failure="ignore")


def _proxy_prediction(pair, blobs):
    """What a good network would predict: the FM's structure on the target grid."""
    em_geom = pair[1]
    grid = make_grid(em_geom, 100e-9, 4)
    g = ImageGeometry(grid.shape_yx, (100e-9, 100e-9), grid.geometry.centre_m)
    return grid, render(g, blobs, 180e-9)[None].astype(np.float32)


def test_prediction_driven_round_recovers_a_failed_section():
    blobs = random_blobs(5)
    p = make_pair(blobs, meta_shift_m=(1.5e-6, 1.1e-6), meta_rot_deg=-1.2, scale_error=-0.008)
    _, em_geom, fm, _, fm_meta = p
    meta = moving_to_fixed_px(fm_meta, em_geom)
    grid, pred = _proxy_prediction(p, blobs)
    r = refine_to_prediction(fm[None], pred, grid.target_to_em_px, meta, meta, em_geom.shape_yx,
                             em_geom.pixel_size_m[0], CaptureRange())
    assert _error_fm_px(meta, p) > 15
    assert r.accepted and not r.bound_violations
    assert _error_fm_px(r.fm_to_em_px, p) < 0.25
    assert r.ncc_candidate > r.ncc_previous


def test_prediction_driven_round_refuses_a_shift_beyond_the_range():
    blobs = random_blobs(5)
    p = make_pair(blobs, meta_shift_m=(2.8e-6, 0.0))
    _, em_geom, fm, _, fm_meta = p
    meta = moving_to_fixed_px(fm_meta, em_geom)
    grid, pred = _proxy_prediction(p, blobs)
    r = refine_to_prediction(fm[None], pred, grid.target_to_em_px, meta, meta, em_geom.shape_yx,
                             em_geom.pixel_size_m[0], CaptureRange(max_shift_um=1.5))
    assert r.bound_violations and not r.accepted
    np.testing.assert_array_equal(r.fm_to_em_px, meta)


def _ingest_files(pair, tmp_path):
    em, em_geom, fm, _, fm_meta = pair
    meta = {"section": "S1",
            "em": {"shape": list(em.shape), "pixel_size_m": list(em_geom.pixel_size_m),
                   "centre_m": list(em_geom.centre_m), "rotation_rad": 0.0},
            "fm": {"shape": [1, *fm.shape], "pixel_size_m": list(fm_meta.pixel_size_m),
                   "centre_m": list(fm_meta.centre_m), "rotation_rad": fm_meta.rotation_rad,
                   "channels": [{"name": "Hoechst"}]}}
    io.write_json(tmp_path / "S1.json", meta)
    io.save_npz(tmp_path / "S1.npz", em=em, fm=fm[None])
    return tmp_path / "S1.json", tmp_path / "S1.npz"


def test_status_and_evidence_in_the_json(pair, tmp_path):
    ingest_json, ingest_npz = _ingest_files(pair, tmp_path)
    out = register.run_multimodal(ingest_json, ingest_npz, None, {"transform": "similarity"}, 7,
                              tmp_path / "round0.json")
    register.run_final(ingest_json, ingest_npz, tmp_path / "round0.json", tmp_path / "reg.json",
                   tmp_path / "reg.png")
    data = json.loads((tmp_path / "reg.json").read_text())
    assert np.asarray(data["fm_to_em_px"]).shape == (3, 3)
    assert data["status"] == "ok" and data["use_for_training"] and data["round"] == 0
    assert data["channel"] == "Hoechst" and out["params"]["seed"] == 7
    evidence = data["evidence"]
    assert {"metric", "landscape", "bound_violations", "capture_range"} <= set(evidence)
    assert 0 <= evidence["landscape"]["second_peak_ratio"] <= 1
    # the correction undoes the metadata error (+0.4 µm x, -0.6 µm y)
    assert data["correction"]["shift_nm"] == pytest.approx([-400, 600], abs=60)
    assert [r["round"] for r in data["rounds"]] == [0]
    assert (tmp_path / "reg.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="not among"):
        register.run_multimodal(ingest_json, ingest_npz, "GFP", {}, 0, tmp_path / "x.json")


def test_failed_section_falls_back_to_metadata_or_stops(tmp_path):
    p = make_pair(random_blobs(), meta_shift_m=(1.25e-6, 0.0))
    ingest_json, ingest_npz = _ingest_files(p, tmp_path)
    settings = {"max_shift_um": 1.0}
    doc = register.run_multimodal(ingest_json, ingest_npz, None, settings, 0, tmp_path / "r0.json")
    assert doc["status"] == "failed" and not doc["use_for_training"]
    np.testing.assert_array_equal(doc["fm_to_em_px"], doc["fm_to_em_px_metadata"])
    trusting = register.run_multimodal(ingest_json, ingest_npz, None,
                                   {**settings, "on_failure": "metadata"}, 0,
                                   tmp_path / "r0m.json")
    assert trusting["status"] == "failed" and trusting["use_for_training"]
    register.run_multimodal(ingest_json, ingest_npz, None, {**settings, "on_failure": "stop"}, 0,
                        tmp_path / "r0s.json")
    with pytest.raises(register.RegistrationFailed, match=r"S1.*failed.*Fix"):
        register.run_final(ingest_json, ingest_npz, tmp_path / "r0s.json", tmp_path / "f.json",
                       tmp_path / "f.png")
    assert not (tmp_path / "f.json").exists() and not (tmp_path / "f.png").exists()


def test_untrustworthy_sections_never_train():
    def section(name, split, status, use):
        return train.SectionData(name, split, np.zeros((8, 8)), np.zeros((1, 2, 2)),
                                 np.ones((2, 2), bool), np.zeros((1, 2)), 1e-7, ["H"],
                                 status, use)

    kept = train.trustworthy([section("A", "train", "ok", True),
                              section("B", "train", "failed", False),
                              section("C", "val", "low_confidence", False)])
    assert [s.name for s in kept] == ["A"]
    with pytest.raises(ValueError, match=r"no training section.*B: failed"):
        train.trustworthy([section("B", "train", "failed", False)])


def test_registration_error_helper_units(pair):
    truth, pts = _truth(pair)
    shifted = truth.copy()
    shifted[0, 2] += 4.0  # 4 EM px = 100 nm = ~1 FM px
    assert rms_error_nm(shifted, truth, pts, 25e-9) == pytest.approx(100.0)
    assert rms_difference_px(shifted, truth, pts) == pytest.approx(0.99, abs=0.02)


def test_fm_on_the_target_grid_matches_the_truth(pair):
    _, em_geom, fm, _, _ = pair
    truth, _ = _truth(pair)
    grid = make_grid(em_geom, 100e-9, 4)
    on_grid = registered_fm(fm[None], truth, grid.target_to_em_px, grid.shape_yx)
    assert np.isfinite(on_grid).all()


def test_prediction_driven_round_lowers_the_error_with_a_trained_model(mini_run, tmp_path):
    """The tiny model's prediction pulls a deliberately misregistered section back."""
    root = mini_run["root"]
    truth = np.asarray(io.read_json(root / "truth" / "S3.json")["fm_to_em_px"])
    doc = io.read_json(root / "registration" / "round0" / "S3.json")
    wrong = similarity_about(np.array([159.5, 159.5]), (14.0, -10.0), 0.0, 1.0) @ truth
    io.write_json(tmp_path / "prev.json", {**doc, "fm_to_em_px": wrong})
    out = register.run_refine(root / "ingest" / "S3.json", root / "ingest" / "S3.npz",
                              tmp_path / "prev.json", root / "model" / "model.pt", 1,
                              {"max_shift_um": 1.0}, None, "cpu", 1, tmp_path / "r1.json")
    meta = io.read_json(root / "ingest" / "S3.json")
    pts = em_field_fm_pixels(tuple(meta["fm"]["shape"][-2:]), truth, (320, 320))
    before = rms_difference_px(wrong, truth, pts)
    after = rms_difference_px(np.asarray(out["fm_to_em_px"]), truth, pts)
    assert before > 4 and after < 0.5, (before, after)
    assert out["evidence"]["accepted"] and out["round"] == 1
    assert out["status"] == "ok"  # agrees with the multimodal estimate
    assert [r["round"] for r in out["rounds"]] == [0, 1]


def test_channel_weights_favour_informative_channels():
    from em2fm.register.refine import channel_weights

    w = channel_weights(np.array([0.8, 0.1, -0.3]))
    assert w.sum() == pytest.approx(1.0)
    assert w[0] > 0.98 and w[2] == 0.0
    np.testing.assert_allclose(channel_weights(np.array([0.0, -0.1])), [0.5, 0.5])


def test_a_predict_section_is_not_registered_and_says_why(mini_run, tmp_path):
    """An EM-only section (``"fm": null``) asked for registration: one clear error."""
    from em2fm import io
    from em2fm.register.steps import run_multimodal

    root = mini_run["root"]
    meta = io.read_json(root / "ingest" / "S3.json")
    io.write_json(tmp_path / "S3.json", {**meta, "fm": None, "role": "predict"})
    with pytest.raises(ValueError, match=r"S3\.json: section 'S3' has the role predict.*Fix:"):
        run_multimodal(tmp_path / "S3.json", root / "ingest" / "S3.npz", None, {}, 0,
                       tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_a_lazily_read_em_registers_exactly_like_the_array(pair, monkeypatch):
    """The fixed image smoothed block by block: the same transform, bit for bit."""
    from em2fm import geometry

    em, em_geom, fm, _, fm_meta = pair
    monkeypatch.setattr(geometry, "REGION_BLOCK_PX", 96)

    class Strict:  # refuses to read more than a quarter of the EM at once
        shape = em.shape

        def read(self, r0, r1, c0, c1):
            assert (r1 - r0) * (c1 - c0) <= em.size // 4
            return em[r0:r1, c0:c1]

    params = RegistrationParams(pixel_size_nm=50)
    a = register_images(em, em_geom, fm, fm_meta, params)
    b = register_images(Strict(), em_geom, fm, fm_meta, params)
    np.testing.assert_array_equal(a.fixed, b.fixed)
    np.testing.assert_array_equal(a.fm_to_em_px, b.fm_to_em_px)


def test_the_refine_rounds_prediction_from_the_lazy_em_equals_the_in_memory_one(mini_run):
    """predict_for_registration on the npz read region by region = the whole-array path."""
    import torch

    from em2fm.lazy import open_array
    from em2fm.predict import load_model, predict_work, section_grid
    from em2fm.register.steps import predict_for_registration
    from em2fm.tiles import normalise_em, prepare_em

    root = mini_run["root"]
    meta = io.read_json(root / "ingest" / "S3.json")
    model, ckpt = load_model(root / "model" / "model.pt", torch.device("cpu"))
    reader = open_array(root / "ingest" / "S3.npz", "em")
    lazy, m = predict_for_registration(reader, meta, model, ckpt, None)
    em = io.load_npz(root / "ingest" / "S3.npz")["em"]
    grid = section_grid(meta, ckpt, None)
    work = normalise_em(prepare_em(em, geometry_from_meta(meta["em"]), grid),
                        ckpt.get("em_normalisation", "zscore"))
    whole, _ = predict_work(model, work, int(ckpt["margin"]), window=64)
    assert ckpt["em_normalisation"] == "percentile"  # the default
    # the lazy path maps the raw work image's percentiles to ±2, the in-memory one the
    # z-scored image's (as training's tiles hold it): equal to float32 rounding, not bit for
    # bit (the z-score path is, below)
    np.testing.assert_allclose(lazy, whole, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(m, grid.target_to_em_px)
    # the same model fed z-scored EM: both paths bit for bit
    zscore = {**ckpt, "em_normalisation": "zscore"}
    lazy_z, _ = predict_for_registration(reader, meta, model, zscore, None)
    whole_z, _ = predict_work(model, normalise_em(prepare_em(
        em, geometry_from_meta(meta["em"]), grid), "zscore"), int(ckpt["margin"]), window=64)
    np.testing.assert_array_equal(lazy_z, whole_z)
