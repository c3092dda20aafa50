import numpy as np
import pytest
from scipy import ndimage

from em2fm.montage import (
    ArrayReader,
    Mosaic,
    nominal_positions,
    phase_correlation,
    stitch,
)


def _texture(shape, seed=0):
    rng = np.random.default_rng(seed)
    img = sum(a * ndimage.gaussian_filter(rng.normal(size=shape), s)
              for s, a in [(1, 0.3), (3, 1.0), (10, 2.0)])
    return (img - img.mean()) / img.std()


def _montage(seed=0, n=3, tile=256, step=220, jitter=6.0, stage_error=5.0):
    """A simulated n×n montage: tiles cut at known (integer) offsets, noisy stage positions."""
    rng = np.random.default_rng(seed)
    truth = np.array([[r * step, c * step] for r in range(n) for c in range(n)], float)
    truth += np.round(rng.uniform(-jitter, jitter, truth.shape)) + jitter
    size = int(truth.max()) + tile + 1
    world = _texture((size, size), seed)
    tiles = []
    for r, c in truth.astype(int):
        noisy = world[r: r + tile, c: c + tile] + 0.2 * rng.normal(size=(tile, tile))
        tiles.append(ArrayReader(noisy.astype(np.float32)))
    stage = truth + rng.normal(0, stage_error, truth.shape)
    return world, truth, tiles, stage


def test_phase_correlation_finds_a_subpixel_shift():
    a = _texture((64, 80))
    b = ndimage.shift(a, (2.3, -4.6), order=3, mode="wrap")
    s = phase_correlation(a, b)
    assert s == pytest.approx((2.3, -4.6), abs=0.15)


@pytest.mark.parametrize("seed", [0, 4])  # 4: a false corner match, dropped as an outlier
def test_stitching_a_3x3_montage_recovers_the_truth(seed):
    _, truth, tiles, stage = _montage(seed)
    res = stitch(tiles, stage)
    assert len(res.seams) == 20  # 12 edge neighbours + 8 diagonal corners overlap
    err = (res.positions - res.positions[0]) - (truth - truth[0])
    assert np.abs(err).max() < 1.0  # SEM px
    assert np.abs((stage - stage[0]) - (truth - truth[0])).max() > 3  # the stage was off
    summary = res.summary([f"t{k}" for k in range(9)])
    assert summary["max_residual_px"] < 1.0 and summary["n_seams_used"] >= 12
    assert summary["seams"][0]["tiles"] == ["t0", "t1"]


def test_the_lazy_mosaic_reads_the_section():
    world, truth, tiles, stage = _montage(seed=1)
    res = stitch(tiles, stage)
    mosaic = Mosaic(tiles, res.positions)
    origin = truth.min(axis=0).astype(int)
    region = mosaic.read(100, 300, 150, 420)
    ref = world[origin[0] + 100: origin[0] + 300, origin[1] + 150: origin[1] + 420]
    assert np.corrcoef(region.ravel(), ref.ravel())[0, 1] > 0.97  # (tile noise 0.2)
    assert mosaic.shape[0] >= 2 * 220 + 256


def test_a_tile_without_overlap_keeps_its_stage_position():
    tiles = [ArrayReader(_texture((64, 64), k).astype(np.float32)) for k in range(2)]
    res = stitch(tiles, np.array([[0.0, 0.0], [0.0, 200.0]]))
    assert res.seams == [] and res.positions[1] == pytest.approx([0.0, 200.0])


def test_nominal_positions_from_stage_centres():
    px = 5e-9
    pos = nominal_positions([(0.0, 0.0), (1e-6, 0.0), (0.0, -1e-6)], px, [(256, 256)] * 3)
    np.testing.assert_allclose(pos, [[0, 0], [0, 200], [200, 0]], atol=1e-9)


def test_a_simulated_montage_section_is_ingested_stitched(tmp_path):
    """simulate (tiled variant, known offsets) → ingest stitches the very SEM image back."""
    from em2fm import ingest, io
    from em2fm.simulate import run as simulate

    physics = {"em_size_px": 512, "em_pixel_size_nm": 25.0, "fm_size_px": 192,
               "fm_render_pitch_max_nm": 50.0}
    dyes = {"Hoechst": {"excitation_nm": 405, "emission_nm": 450}}
    out = {}
    for variant in ("tiled", "gui"):
        d = tmp_path / variant
        simulate("S001", 1, 7, physics, variant, d / "raw", d / "t.json", d / "t.npz",
                 montage={"tiles": 3, "overlap": 0.15, "jitter_px": 4, "stage_error_nm": 50})
        out[variant] = ingest.run(d / "raw", "S001", ["Hoechst"], dyes, 20, None,
                                  d / "i.json", d / "i.npz")
    tiled, gui = out["tiled"], out["gui"]
    truth = io.read_json(tmp_path / "tiled" / "t.json")["em_montage"]
    assert len(truth["tiles"]) == 9 and (tmp_path / "tiled" / "raw" / "EM-grid").is_dir()
    assert tiled.em.shape_cyx == gui.em.shape_cyx
    np.testing.assert_array_equal(tiled.em_array(), gui.em_array())  # every tile where it belongs
    # placed by the tiles' stage positions on average (50 nm errors, 9 tiles)
    assert np.hypot(*np.subtract(tiled.em.centre_m, gui.em.centre_m)) < 60e-9
    meta = io.read_json(tmp_path / "tiled" / "i.json")
    assert meta["montage"]["n_tiles"] == 9 and meta["montage"]["max_residual_px"] < 1.0
    assert all(s["residual_px"] < 1.0 for s in meta["montage"]["seams"] if s["used"])


def test_a_montage_written_band_by_band_equals_the_whole_image_assembly(tmp_path, monkeypatch):
    """The streamed mosaic (holes filled with the covered mean) is the in-memory result."""
    from em2fm import ingest, io
    from em2fm.montage import FilledMosaic, covered_fraction, covered_mean

    world = _texture((400, 500), 5) * 3000 + 20000
    origins = [(0, 0), (0, 230), (190, 10), (200, 260)]  # a hole between the four tiles
    tiles = [ArrayReader(world[r:r + 200, c:c + 240].astype(np.uint16)) for r, c in origins]
    mosaic = Mosaic(tiles, np.array(origins, float))
    whole = mosaic.read(0, mosaic.shape[0], 0, mosaic.shape[1])  # the former assembly
    holes = ~np.isfinite(whole)
    assert holes.any()
    whole[holes] = float(np.nanmean(whole))
    expected = np.clip(np.round(whole), 0, 65535).astype(np.uint16)
    frac = 1 - covered_fraction(mosaic.shape, mosaic.origins, [t.shape for t in tiles])
    assert frac == pytest.approx(holes.mean(), abs=1e-12)
    filled = FilledMosaic(mosaic, "uint16", covered_mean(mosaic, band_px=3000))
    monkeypatch.setattr(ingest, "BAND_PX", 37 * mosaic.shape[1])
    monkeypatch.setattr(ingest, "BLOCK_COLS", 128)
    with io.npz_writer(tmp_path / "m.npz") as w:
        ingest.write_em(w, filled, "uint16")
    got = np.load(tmp_path / "m.npz")["em"]
    np.testing.assert_array_equal(got[~holes], expected[~holes])
    # the fill: a float64 streamed mean instead of numpy's float32 one (rounding only)
    assert np.abs(got[holes].astype(int) - expected[holes]).max() <= 1
