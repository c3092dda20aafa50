import math

import numpy as np
import pytest

from em2fm.evaluate import COLUMNS, blurred_em, pcc, r2, read_tsv, rms_error_nm


def test_pcc_and_r2():
    a = np.arange(10.0)
    assert pcc(a, 2 * a + 1) == pytest.approx(1)
    assert pcc(a, -a) == pytest.approx(-1)
    assert math.isnan(pcc(a, np.ones(10)))
    assert r2(a, a) == 1 and r2(np.full(10, a.mean()), a) == pytest.approx(0)


def test_rms_error():
    m = np.eye(3)
    m2 = np.eye(3)
    m2[0, 2] = 3
    m2[1, 2] = 4
    assert rms_error_nm(m2, m, np.array([[0.0, 0], [5, 5]]), 10e-9) == pytest.approx(50)


def test_blurred_em_block_average():
    em = np.kron(np.arange(4.0).reshape(2, 2), np.ones((4, 4)))
    out = blurred_em(em, 4, sigma_target_px=0)
    np.testing.assert_allclose(out, [[0, 1], [2, 3]])


def test_metrics_table(mini_run):
    rows = read_tsv(mini_run["root"] / "metrics.tsv")
    header = (mini_run["root"] / "metrics.tsv").read_text().splitlines()[0].split("\t")
    assert header == COLUMNS
    assert [r["section"] for r in rows] == ["S1", "S2", "S3"]
    assert [r["split"] for r in rows] == ["train", "val", "test"]
    test = rows[2]
    assert test["pcc"] > 0.9
    assert test["noise_ceiling_pcc"] > 0.9
    # stage metadata is off by 283 nm; registration brings it under 30 nm
    assert test["metadata_error_nm"] == pytest.approx(282.8, abs=1)
    assert test["registration_error_nm"] < 30
    assert test["r2_baseline_mean"] <= 0.01  # a constant cannot explain variance
    assert test["pcc_vs_clean"] > 0.9


def test_prediction_on_another_grid_is_refused(mini_run, tmp_path):
    from em2fm import io
    from em2fm.evaluate import read_prediction

    meta = io.read_json(mini_run["root"] / "tiles" / "S3.json")
    meta["target_centre_m"] = [meta["target_centre_m"][0] + 1e-7, meta["target_centre_m"][1]]
    with pytest.raises(ValueError, match=r"placed 100\.0 nm away"):
        read_prediction(mini_run["root"] / "predictions" / "S3.ome.tif", meta)
