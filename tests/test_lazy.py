import numpy as np
import pytest

from em2fm import io
from em2fm.geometry import ImageGeometry
from em2fm.inference import ArraySource
from em2fm.lazy import PreparedEM, open_array
from em2fm.tiles import make_grid, prepare_em


@pytest.fixture
def em_npz(tmp_path):
    em = (np.random.default_rng(0).normal(size=(1200, 1000)) * 100 + 1000).astype(np.uint16)
    io.save_npz(tmp_path / "s.npz", em=em, fm=np.zeros((1, 4, 4), np.float32))
    return em, tmp_path / "s.npz"


def test_regions_of_an_npz_member(em_npz):
    em, path = em_npz
    r = open_array(path, "em")
    assert r.shape == em.shape
    np.testing.assert_array_equal(r.read(10, 30, 5, 900), em[10:30, 5:900])
    np.testing.assert_array_equal(r.read(10, 30, 5, 70), em[10:30, 5:70])
    assert r.bytes_read == 20 * 1000 * 2 + 20 * 65 * 2  # only what was asked (whole rows
    np.save(path.parent / "e.npy", em)  # when wide)
    np.testing.assert_array_equal(open_array(path.parent / "e.npy").read(0, 3, 0, 4), em[:3, :4])


def test_compressed_npz_is_refused_by_name(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", em=np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"c\.npz.*compressed"):
        open_array(tmp_path / "c.npz", "em")


@pytest.mark.parametrize("em_px_nm", [4.86, 25.0, 10.0])
def test_prepared_regions_equal_the_whole_image(em_npz, em_px_nm):
    em, path = em_npz
    g = ImageGeometry(em.shape, (em_px_nm * 1e-9,) * 2, (0.0, 0.0))
    grid = make_grid(g, 100e-9, 4)
    full = prepare_em(em, g, grid)
    lazy = PreparedEM(open_array(path, "em"), g, grid, band_rows=37)
    assert lazy.shape == full.shape
    np.testing.assert_allclose(lazy.read(5, 50, 7, 66), full[5:50, 7:66], atol=2e-5)
    w = full.shape[1]  # beyond the image: reflected like the in-memory source
    np.testing.assert_allclose(lazy.read(-20, 40, w - 30, w + 25),
                               ArraySource(full).read(-20, 40, w - 30, w + 25), atol=2e-5)


def test_lazy_reading_never_loads_the_whole_image(em_npz):
    em, path = em_npz
    g = ImageGeometry(em.shape, (10e-9, 10e-9), (0.0, 0.0))
    grid = make_grid(g, 100e-9, 4)
    reader = open_array(path, "em")
    lazy = PreparedEM(reader, g, grid, band_rows=32)
    whole = em.nbytes
    assert reader.bytes_read >= whole  # the statistics pass saw every pixel once…
    assert reader.max_read < whole / 8  # …a band at a time
    before = reader.bytes_read
    lazy.read(100, 140, 100, 140)  # a 40² work px window: 100² EM px + halo
    assert reader.bytes_read - before < whole / 20


@pytest.mark.parametrize("samples", [None, 500])
def test_percentile_normalisation_equals_the_in_memory_one(em_npz, monkeypatch, samples):
    """The model's per-section EM percentile normalisation, streamed (and subsampled)."""
    from em2fm import lazy as lazy_mod
    from em2fm.tiles import normalise_em

    if samples is not None:
        monkeypatch.setattr(lazy_mod, "PERCENTILE_SAMPLES", samples)
    em, path = em_npz
    g = ImageGeometry(em.shape, (10e-9, 10e-9), (0.0, 0.0))
    grid = make_grid(g, 100e-9, 4)
    full = normalise_em(prepare_em(em, g, grid), "percentile")
    lazy = PreparedEM(open_array(path, "em"), g, grid, band_rows=37, normalisation="percentile")
    got = lazy.read(0, full.shape[0], 0, full.shape[1])
    tol = 2e-4 if samples is None else 0.1  # a 500-px subsample: percentiles within ~5 %
    np.testing.assert_allclose(got, full, atol=tol * np.abs(full).max())
    assert not np.allclose(got, prepare_em(em, g, grid), atol=1e-3)  # not the z-score
    with pytest.raises(ValueError, match="zscore or percentile"):
        PreparedEM(open_array(path, "em"), g, grid, normalisation="minmax")
