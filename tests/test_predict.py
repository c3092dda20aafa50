import numpy as np
import pytest
import torch

from em2fm import io
from em2fm.geometry import geometry_from_meta
from em2fm.odemis import read_file
from em2fm.predict import load_model, predict_work
from em2fm.tiles import make_grid


def test_prediction_overlays_the_em_by_metadata(mini_run):
    root = mini_run["root"]
    f = read_file(root / "predictions" / "S3.ome.tif")
    (img,) = f.images
    assert img.data.dtype == np.float32 and img.data.shape == (1, 80, 80)
    assert [c.name for c in img.channels] == ["Hoechst"]
    assert img.channels[0].excitation_nm == 405  # an FM channel for Odemis
    assert img.pixel_size_m == pytest.approx((100e-9, 100e-9))
    meta = io.read_json(root / "ingest" / "S3.json")
    em = geometry_from_meta(meta["em"])
    # 80 target px of 100 nm cover the 320 EM px of 25 nm exactly: same centre, same field
    assert img.centre_m == pytest.approx(em.centre_m, abs=1e-12)
    assert img.rotation_rad == em.rotation_rad
    unc = read_file(root / "predictions" / "S3.uncertainty.ome.tif").images[0]
    assert unc.channels[0].name == "Hoechst uncertainty"
    assert (unc.data >= 0).all() and unc.data.max() > 0


def test_prediction_never_reads_fm(mini_run, tmp_path, monkeypatch):
    """predict.run loads only the EM array of the ingest npz."""
    from em2fm import predict

    root = mini_run["root"]
    arrays = io.load_npz(root / "ingest" / "S3.npz")
    io.save_npz(tmp_path / "S3.npz", em=arrays["em"])  # no FM at all
    predict.run(root / "ingest" / "S3.json", tmp_path / "S3.npz", root / "model" / "model.pt",
                None, {"window": 24, "test_time_augmentation": False}, "cpu", 1,
                tmp_path / "p.ome.tif", tmp_path / "u.ome.tif")
    a = read_file(tmp_path / "p.ome.tif").images[0].data
    assert a.shape == (1, 80, 80)


def test_windows_stitch_seamlessly(mini_run):
    root = mini_run["root"]
    model, _ = load_model(root / "model" / "model.pt", torch.device("cpu"))
    meta = io.read_json(root / "ingest" / "S2.json")
    em_geom = geometry_from_meta(meta["em"])
    from em2fm.tiles import prepare_em

    grid = make_grid(em_geom, 100e-9, 4)
    em = prepare_em(io.load_npz(root / "ingest" / "S2.npz")["em"], em_geom, grid)
    small, _ = predict_work(model, em, 4, window=8)  # context raised to the receptive field
    large, _ = predict_work(model, em, 4, window=80)
    # windows see the receptive field as context: the window grid leaves no trace
    np.testing.assert_allclose(small, large, atol=1e-5)
    mean, std = predict_work(model, em, 4, window=40, tta=True)
    assert std is not None and std.shape == mean.shape


def test_grid_is_the_models_whatever_the_fm_pixel_size(mini_run):
    import pytest

    from em2fm import io
    from em2fm.predict import section_grid

    root = mini_run["root"]
    ckpt = torch.load(root / "model" / "model.pt", weights_only=True)
    meta = io.read_json(root / "ingest" / "S1.json")
    other = {**meta, "fm": {**meta["fm"], "pixel_size_m": [80e-9, 80e-9]}}
    for m in (meta, other, {**meta, "fm": None}):
        g = section_grid(m, ckpt, None)
        assert g.pixel_size_m == pytest.approx(ckpt["target_pixel_size_m"])
        assert g.work_pixel_size_m == pytest.approx(25e-9)
    assert section_grid(other, ckpt, 80).pixel_size_m == g.pixel_size_m  # config loses
    coarse = {**meta, "em": {**meta["em"], "pixel_size_m": [50e-9, 50e-9]}}
    with pytest.raises(ValueError, match=r"SEM pixel \(50 nm\) is coarser than the model's "
                                         "EM input pixel \\(25 nm"):
        section_grid(coarse, ckpt, None)
