import numpy as np
import pytest

from em2fm import io, tiles
from em2fm.geometry import ImageGeometry, apply_affine
from em2fm.tiles import make_grid, prepare_em, registered_fm, window_origins


def test_grid_inside_em_field_and_centred():
    em = ImageGeometry((2048, 2000), (10e-9, 10e-9), (1e-3, 2e-3))
    g = make_grid(em, 100e-9, 4)
    assert g.shape_yx == (204, 200)
    assert g.work_shape_yx == (816, 800)
    assert g.work_pixel_size_m == pytest.approx(25e-9)
    # the target grid's top-left corner is the EM's top-left corner
    corner = apply_affine(g.target_to_em_px, np.array([-0.5, -0.5]))
    np.testing.assert_allclose(corner, [-0.5, -0.5])
    # its stage placement agrees with mapping a pixel through the EM
    p = np.array([10.0, 20.0])
    via_em = apply_affine(em.pixel_to_stage(), apply_affine(g.target_to_em_px, p))
    np.testing.assert_allclose(apply_affine(g.geometry.pixel_to_stage(), p), via_em, atol=1e-15)


def test_prepare_em_is_zscored_on_the_work_grid(rng):
    em_geom = ImageGeometry((400, 400), (10e-9, 10e-9), (0, 0))
    g = make_grid(em_geom, 100e-9, 4)
    work = prepare_em(rng.normal(500, 30, (400, 400)), em_geom, g)
    assert work.shape == g.work_shape_yx
    assert abs(work.mean()) < 1e-4 and work.std() == pytest.approx(1, abs=1e-3)


def test_registered_fm_lands_on_the_target_grid():
    em_geom = ImageGeometry((400, 400), (10e-9, 10e-9), (0, 0))
    g = make_grid(em_geom, 100e-9, 4)
    fm = np.zeros((1, 60, 60), np.float32)
    fm[0, 30, 25] = 1
    # FM px -> EM px: same pixel size as the target grid, FM pixel (25, 30) at target (12, 7)
    m = g.target_to_em_px.copy()
    m[:2, 2] = apply_affine(g.target_to_em_px, np.array([12.0, 7.0])) - 10 * np.array([25, 30])
    out = registered_fm(fm, m, g.target_to_em_px, g.shape_yx)
    assert np.unravel_index(np.nanargmax(out[0]), out[0].shape) == (7, 12)
    assert np.isnan(out).any()  # FM does not cover the whole grid


def test_window_origins():
    mask = np.zeros((10, 12), bool)
    mask[2:9, 1:12] = True
    tiles = window_origins(mask, 3, stride=3)
    assert tiles.tolist() == [[3, 3], [3, 6], [3, 9], [6, 3], [6, 6], [6, 9]]
    assert len(window_origins(mask, 3)) == (7 - 2) * (11 - 2)
    assert window_origins(mask, 20).shape == (0, 2)


def test_registered_fm_is_written_on_the_prediction_grid(mini_run, tmp_path):
    from em2fm.odemis import read_file

    root = mini_run["root"]
    meta = tiles.run(root / "ingest" / "S3.json", root / "ingest" / "S3.npz",
                     root / "registration" / "S3.json", {"em_scale": 4, "tile_size": 16},
                     "test", tmp_path / "S3.npz", tmp_path / "S3.json",
                     fm_path=tmp_path / "S3.fm.ome.tif")
    fm = read_file(tmp_path / "S3.fm.ome.tif").images[0]
    pred = read_file(root / "predictions" / "S3.ome.tif").images[0]
    assert fm.shape_cyx == pred.shape_cyx and fm.pixel_size_m == pred.pixel_size_m
    assert fm.centre_m == pytest.approx(pred.centre_m, abs=1e-12)
    assert [c.name for c in fm.channels] == ["Hoechst"] and fm.channels[0].excitation_nm
    covered = np.isfinite(fm.data[0])
    assert covered.mean() == pytest.approx(meta["mask_fraction"])
    np.testing.assert_allclose(fm.data[:, covered], io.load_npz(tmp_path / "S3.npz")["fm"][
        :, covered])


def test_reference_section_sets_every_sections_grid(mini_run, tmp_path):
    """Without tiles.pixel_size_nm, all sections share the first training section's FM
    pixel (the model's grid), whatever their own."""
    from em2fm import io, tiles

    root = mini_run["root"]
    ref = io.read_json(root / "ingest" / "S1.json")
    ref["fm"]["pixel_size_m"] = [80e-9, 80e-9]
    io.write_json(tmp_path / "ref.json", ref)
    settings = {"pixel_size_nm": None, "em_scale": 4, "tile_size": 16, "margin": 4}
    args = (root / "ingest" / "S3.json", root / "ingest" / "S3.npz",
            root / "registration" / "S3.json", settings, "test")
    meta = tiles.run(*args, tmp_path / "a.npz", tmp_path / "a.json",
                     reference_json=tmp_path / "ref.json")
    assert abs(meta["target_pixel_size_m"] - 80e-9) < 1e-15
    meta = tiles.run(*args, tmp_path / "b.npz", tmp_path / "b.json")
    assert abs(meta["target_pixel_size_m"] - 100e-9) < 1e-15  # its own FM pixel


def test_tiles_written_band_by_band_equal_the_in_memory_tiles(tmp_path, rng, monkeypatch):
    """tiles.run reads the EM lazily and writes the work grid in bands: same arrays."""
    from em2fm import lazy

    em = (rng.normal(size=(900, 800)) * 100 + 1000).astype(np.uint16)
    fm = rng.normal(300, 20, (1, 100, 90)).astype(np.float32)
    io.save_npz(tmp_path / "i.npz", em=em, fm=fm)
    geom = {"pixel_size_m": [10e-9, 10e-9], "centre_m": [0.0, 0.0], "rotation_rad": 0.0,
            "shear": 0.0}
    meta = {"section": "S", "em": {**geom, "shape": [900, 800]},
            "fm": {**geom, "shape": [1, 100, 90], "pixel_size_m": [100e-9, 100e-9],
                   "channels": [{"name": "Hoechst"}]}}
    io.write_json(tmp_path / "i.json", meta)
    reg = {"fm_to_em_px": [[10.0, 0, 3.0], [0, 10.0, -7.0], [0, 0, 1]]}
    io.write_json(tmp_path / "r.json", reg)
    settings = {"em_scale": 4, "tile_size": 8}
    ref, _ = tiles.make_tiles(meta, {"em": em, "fm": fm}, reg, tiles.TileParams(**settings))

    reads = []
    real = lazy.RawRegionReader.read

    def spy(self, r0, r1, c0, c1):
        reads.append((r1 - r0) * (c1 - c0))
        return real(self, r0, r1, c0, c1)

    monkeypatch.setattr(lazy.RawRegionReader, "read", spy)
    monkeypatch.setattr(tiles, "WORK_BAND_ROWS", 48)
    monkeypatch.setattr(tiles, "WORK_BLOCK_COLS", 100)
    tiles.run(tmp_path / "i.json", tmp_path / "i.npz", tmp_path / "r.json", settings, "train",
              tmp_path / "t.npz", tmp_path / "t.json")
    got = io.load_npz(tmp_path / "t.npz")
    assert list(got) == ["em", "fm", "mask", "tiles"]
    assert got["em"].dtype == np.float32 and got["em"].shape == ref["em"].shape
    np.testing.assert_array_equal(got["em"], ref["em"])  # bit for bit
    for key in ("fm", "mask", "tiles"):
        np.testing.assert_array_equal(got[key], ref[key])
    assert max(reads) < em.size / 4  # never the whole EM at once


@pytest.mark.parametrize(("size", "stride"), [(1, 1), (3, 1), (8, 3), (16, 16)])
def test_window_origins_on_the_stride_grid_match_brute_force(size, stride):
    from scipy import ndimage

    mask = ndimage.gaussian_filter(np.random.default_rng(size).normal(size=(70, 83)), 3) > -0.05
    want = [[r, c] for r in range(0, 70 - size + 1, stride)
            for c in range(0, 83 - size + 1, stride) if mask[r:r + size, c:c + size].all()]
    got = window_origins(mask, size, stride)
    assert got.dtype == np.int32 and got.tolist() == want
