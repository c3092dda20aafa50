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


@pytest.mark.parametrize(("em_px_nm", "strip_px"), [(4.86, 2**24), (25.0, 2**24),
                                                    (10.0, 2**24), (4.86, 5000)])
def test_prepared_regions_equal_the_whole_image(em_npz, em_px_nm, strip_px, monkeypatch):
    """Also when a region is prepared in strips of rows (a few rows each at 5000 px)."""
    from em2fm import lazy as lazy_mod

    monkeypatch.setattr(lazy_mod, "RAW_STRIP_PX", strip_px)
    em, path = em_npz
    g = ImageGeometry(em.shape, (em_px_nm * 1e-9,) * 2, (0.0, 0.0))
    grid = make_grid(g, 100e-9, 4)
    full = prepare_em(em, g, grid)
    lazy = PreparedEM(open_array(path, "em"), g, grid, band_rows=37)
    assert lazy.shape == full.shape
    np.testing.assert_array_equal(lazy.read(5, 50, 7, 66), full[5:50, 7:66])  # bit for bit
    w = full.shape[1]  # beyond the image: reflected like the in-memory source
    np.testing.assert_array_equal(lazy.read(-20, 40, w - 30, w + 25),
                                  ArraySource(full).read(-20, 40, w - 30, w + 25))


@pytest.mark.parametrize(("shape", "em_px_nm", "target_nm"), [
    ((1200, 1000), 10.0, 100.0), ((1000, 1000), 10.0, 106.4), ((777, 1001), 4.86, 106.4),
    ((640, 700), 25.0, 100.0), ((300, 9000), 25.0, 100.0)])
def test_streamed_zscore_is_numpys_bit_for_bit(shape, em_px_nm, target_nm, monkeypatch):
    """The pairwise float32 sums of numpy, walked leaf by leaf (contiguous work image, and a
    cropped view summed in buffered chunks of rows): the same mean and std, exactly."""
    from em2fm import lazy as lazy_mod
    from em2fm.montage import ArrayReader

    monkeypatch.setattr(lazy_mod, "LEAF", 1000)
    em = (np.random.default_rng(1).normal(size=shape) * 100 + 1000).astype(np.uint16)
    g = ImageGeometry(shape, (em_px_nm * 1e-9,) * 2, (0.0, 0.0))
    grid = make_grid(g, target_nm * 1e-9, 4)
    full = prepare_em(em, g, grid)
    lazy = PreparedEM(ArrayReader(em), g, grid, band_rows=37)
    np.testing.assert_array_equal(lazy.read(0, full.shape[0], 0, full.shape[1]), full)


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


# -- TIFF planes read region by region (the SEM of an Odemis export) ---------------------------
@pytest.mark.parametrize("layout", [{"tile": (64, 48)}, {"rowsperstrip": 40}])
@pytest.mark.parametrize("compression", [None, "lzw"])
def test_tiff_plane_regions_decode_only_what_they_touch(tmp_path, layout, compression):
    import tifffile

    from em2fm.lazy import TiffPlaneReader

    em = (np.random.default_rng(1).normal(size=(300, 250)) * 100 + 1000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((4, 4), np.uint8))  # page 0: something else
    tifffile.imwrite(tmp_path / "p.tif", em, append=True, compression=compression, **layout)
    r = TiffPlaneReader(tmp_path / "p.tif", 1)
    assert r.shape == em.shape
    for reg in [(0, 300, 0, 250), (10, 270, 30, 200), (63, 65, 47, 49), (299, 300, 249, 250),
                (5, 5, 0, 3)]:
        r.max_decoded = 0
        np.testing.assert_array_equal(r.read(*reg), em[reg[0]:reg[1], reg[2]:reg[3]])
    r.max_decoded = 0
    r.read(100, 110, 100, 110)
    assert r.max_decoded <= (64 * 48 if "tile" in layout else 40 * 250) * 2  # one segment
    r.close()


def test_the_odemis_sem_page_is_read_by_region(odemis_sample):
    import tifffile

    from em2fm.lazy import open_plane
    from em2fm.odemis import read_file

    sem = read_file(odemis_sample, load_pixels=False).images[1]
    r = open_plane(sem, 0)
    whole = tifffile.imread(odemis_sample, key=sem.ifds[0])
    np.testing.assert_array_equal(r.read(1000, 1100, 7, 2048), whole[1000:1100, 7:])
    np.testing.assert_array_equal(r.read(0, 2048, 0, 2048), whole)
    # Odemis wrote this plane as one LZW strip: it is decoded once and kept, not per region
    assert r.bytes_read == r._page.databytecounts[0]


def test_ingest_streams_a_tiled_sem(tmp_path, monkeypatch):
    """A tiled SEM page is written to the npz band by band: never decoded whole."""
    from em2fm import ingest
    from em2fm.lazy import TiffPlaneReader
    from em2fm.odemis import Channel, OdemisImage, write_file

    rng = np.random.default_rng(3)
    em = (rng.normal(size=(1024, 768)) * 100 + 1000).astype(np.uint16)
    image = OdemisImage(name="SEM", data=em[None], channels=[Channel("SE")],
                        shape_cyx=(1, *em.shape), dtype="uint16", pixel_size_m=(5e-9, 5e-9),
                        centre_m=(0.0, 0.0))
    write_file(tmp_path / "raw" / "a.ome.tiff", [image], thumbnail=False)
    import tifffile  # re-tile the SEM page as a pyramidal Odemis export stores it

    with tifffile.TiffFile(tmp_path / "raw" / "a.ome.tiff") as t:
        desc = t.pages[0].description
    (tmp_path / "raw" / "a.ome.tiff").unlink()
    tifffile.imwrite(tmp_path / "raw" / "a.ome.tiff", em, tile=(128, 128), compression="lzw",
                     description=desc.encode(), metadata=None)
    readers = []
    real_init = TiffPlaneReader.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        readers.append(self)

    monkeypatch.setattr(TiffPlaneReader, "__init__", spy)
    monkeypatch.setattr(ingest, "BAND_PX", 128 * 768)  # 128-row bands
    monkeypatch.setattr(ingest, "BLOCK_COLS", 256)
    r = ingest.run(tmp_path / "raw", "S", [], {}, 20, None, tmp_path / "S.json",
                   tmp_path / "S.npz", role="predict")
    np.testing.assert_array_equal(np.load(tmp_path / "S.npz")["em"], em)
    assert r.em.data is None and len(readers) == 1
    assert readers[0].max_decoded <= em.nbytes / 8  # one block of 128 × 256 px at a time
