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
    assert 0.5 < test["ssim"] <= 1
    assert 0 < test["nrmse"] < test["nrmse_baseline_mean"]  # beats the constant mean
    assert test["pcc_vs_clean"] > 0.9
    assert {r["registration_status"] for r in rows} == {"ok"}


def test_registration_rounds_table(mini_run):
    rows = read_tsv(mini_run["root"] / "registration_rounds.tsv")
    assert [(r["section"], r["round"]) for r in rows] == [
        (s, k) for s in ("S1", "S2", "S3") for k in (-1.0, 0.0)]
    for meta, mm in zip(rows[::2], rows[1::2], strict=True):
        assert meta["method"] == "stage metadata" and mm["method"] == "multimodal"
        assert mm["error_nm"] < meta["error_nm"] / 5
        assert mm["change_fm_px"] == pytest.approx(meta["error_fm_px"], abs=0.5)


def test_status_is_carried_into_the_metrics(mini_run, tmp_path):
    """A failed section is flagged in every row of the metrics table."""
    import shutil

    from em2fm import evaluate, io

    root = mini_run["root"]
    reg = tmp_path / "registration"
    shutil.copytree(root / "registration", reg)
    doc = io.read_json(reg / "S2.json")
    io.write_json(reg / "S2.json", {**doc, "status": "failed"})
    s = mini_run["sections"]
    evaluate.run(s, [str(root / "tiles" / f"{x}.npz") for x in s],
                 [str(root / "predictions" / f"{x}.ome.tif") for x in s],
                 [str(root / "ingest" / f"{x}.json") for x in s],
                 [str(reg / f"{x}.json") for x in s], str(root / "model" / "model.pt"),
                 str(root / "truth"), str(tmp_path / "m.tsv"), str(tmp_path / "r.tsv"))
    status = {r["section"]: r["registration_status"] for r in read_tsv(tmp_path / "m.tsv")}
    assert status == {"S1": "ok", "S2": "failed", "S3": "ok"}


def test_prediction_on_another_grid_is_refused(mini_run, tmp_path):
    from em2fm import io
    from em2fm.evaluate import read_prediction

    meta = io.read_json(mini_run["root"] / "tiles" / "S3.json")
    meta["target_centre_m"] = [meta["target_centre_m"][0] + 1e-7, meta["target_centre_m"][1]]
    with pytest.raises(ValueError, match=r"placed 100\.0 nm away"):
        read_prediction(mini_run["root"] / "predictions" / "S3.ome.tif", meta)
