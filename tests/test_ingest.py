import json
from pathlib import Path

import numpy as np
import pytest

from em2fm import ingest
from em2fm.ingest import DyeSpec, ingest_section
from em2fm.odemis import Channel, ExportError, OdemisImage, write_file, write_per_stream

DYES = [DyeSpec("Hoechst", 405, 450), DyeSpec("Insulin", 590, 617)]


def _images(rng, fm_centre=(1e-3, 2e-3)) -> list[OdemisImage]:
    fm = rng.integers(100, 4000, size=(2, 40, 50), dtype=np.uint16)
    em = rng.integers(0, 60000, size=(1, 200, 200), dtype=np.uint16)
    return [
        OdemisImage("Filtered colour 2", fm,
                    [Channel("Filtered colour 1", 406, 452),
                     Channel("Filtered colour 2", 592, 615)],
                    fm.shape, "uint16", (1e-7, 1e-7), fm_centre, rotation_rad=0.1),
        OdemisImage("Secondary electrons", em, [Channel("Secondary electrons")], em.shape,
                    "uint16", (1e-8, 1e-8), (1e-3, 2e-3), exposure_time_s=1e-6),
    ]


def test_odemis_sample_ingests_with_the_right_metadata(odemis_sample, tmp_path):
    folder = tmp_path / "S001"
    folder.mkdir()
    (folder / odemis_sample.name).symlink_to(odemis_sample)  # read in place, not copied
    r = ingest_section(folder, "S001", DYES)
    meta = r.metadata()
    assert meta["variant"] == "gui-acquisition" and meta["dialect"] == "2016-06"
    assert meta["fm"]["shape"] == [2, 256, 256]
    assert meta["fm"]["pixel_size_m"] == pytest.approx([1.6032e-7, 1.6032e-7])
    assert meta["fm"]["centre_m"] == pytest.approx([1.0301e-3, 6.371e-3])
    assert meta["fm"]["rotation_rad"] == pytest.approx(0.0123)
    assert [c["name"] for c in meta["fm"]["channels"]] == ["Hoechst", "Insulin"]
    assert [c["stream_name"] for c in meta["fm"]["channels"]] == ["Hoechst", "Insulin AF594"]
    assert meta["fm"]["channels"][1]["excitation_nm"] == 590
    assert meta["em"]["shape"] == [2048, 2048]
    assert meta["em"]["pixel_size_m"] == pytest.approx([6e-9, 6e-9])
    assert meta["em"]["centre_m"] == pytest.approx([1.0256e-3, 6.3715e-3])
    assert meta["em"]["rotation_rad"] == 0
    assert meta["em"]["dwell_time_s"] == pytest.approx(2e-6)


def test_channels_found_by_wavelength_not_name_and_in_config_order(tmp_path, rng):
    images = _images(rng)
    write_file(tmp_path / "acq.ome.tiff", images)
    r = ingest_section(tmp_path, "S", [DYES[1], DYES[0]])
    np.testing.assert_array_equal(r.fm.data[0], images[0].data[1])
    np.testing.assert_array_equal(r.fm.data[1], images[0].data[0])
    assert [c.name for c in r.fm.channels] == ["Insulin", "Hoechst"]
    assert r.fm_sources == ["Filtered colour 2", "Filtered colour 1"]


def test_per_stream_variant(tmp_path, rng):
    images = _images(rng)
    write_per_stream(tmp_path, "S7", images)
    r = ingest_section(tmp_path, "S7", [DYES[0]])
    assert r.variant == "per-stream"
    assert len(r.files) == 3
    np.testing.assert_array_equal(r.fm.data[0], images[0].data[0])
    np.testing.assert_array_equal(r.em_array(), images[1].data[0])


def test_write_outputs(tmp_path, rng):
    write_file(tmp_path / "acq.ome.tiff", _images(rng))
    out = tmp_path / "out"
    ingest.run(tmp_path, "S", ["Hoechst"], {"Hoechst": {"excitation_nm": 405}}, 20, None,
               out / "S.json", out / "S.npz")
    meta = json.loads((out / "S.json").read_text())
    for key in ("section", "variant", "dialect", "files", "warnings", "fm", "em"):
        assert key in meta
    for key in ("shape", "pixel_size_m", "centre_m", "rotation_rad", "channels"):
        assert key in meta["fm"]
    arrays = np.load(out / "S.npz")
    assert arrays["fm"].shape == (1, 40, 50) and arrays["em"].shape == (200, 200)


def _expect_error(tmp_path: Path, match: str, dyes=DYES) -> ExportError:
    with pytest.raises(ExportError, match=match) as e:
        ingest_section(tmp_path, "S", dyes)
    assert "Fix:" in str(e.value)
    return e.value


def test_missing_pixel_size_names_the_file(tmp_path, rng):
    images = _images(rng)
    images[0].pixel_size_m = None
    write_file(tmp_path / "acq.ome.tiff", images, thumbnail=False)
    err = _expect_error(tmp_path, "no pixel size")
    assert err.path.endswith("acq.ome.tiff")


def test_missing_position(tmp_path, rng):
    images = _images(rng)
    images[1].centre_m = None
    write_file(tmp_path / "acq.ome.tiff", images, thumbnail=False)
    _expect_error(tmp_path, "no stage position")


def test_missing_configured_channel_lists_what_is_there(tmp_path, rng):
    write_file(tmp_path / "acq.ome.tiff", _images(rng))
    err = _expect_error(tmp_path, "no FM channel matches 'GFP'", dyes=[DyeSpec("GFP", 488)])
    assert "Filtered colour 1" in str(err) and "ex 406 nm" in str(err)


def test_no_sem(tmp_path, rng):
    write_file(tmp_path / "acq.ome.tiff", _images(rng)[:1])
    _expect_error(tmp_path, "no SEM image")


def test_no_export(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    _expect_error(tmp_path, "no OME-TIFF export")


def test_fm_far_from_em(tmp_path, rng):
    write_file(tmp_path / "acq.ome.tiff", _images(rng, fm_centre=(5e-3, 2e-3)))
    _expect_error(tmp_path, "does not overlap")


# ------------------------------------------------------------ EM-only sections, implausible input


def test_predict_section_reads_em_only(tmp_path, rng):
    write_file(tmp_path / "a.ome.tiff", _images(rng))
    r = ingest_section(tmp_path, "S1", DYES, read_fm=False)
    assert r.fm is None and r.metadata()["fm"] is None
    assert any("not read" in w for w in r.warnings)
    ingest.write_outputs(r, tmp_path / "o.json", tmp_path / "o.npz")
    assert set(np.load(tmp_path / "o.npz").files) == {"em"}
    assert json.loads((tmp_path / "o.json").read_text())["fm"] is None


def test_em_only_export_needs_the_predict_role(tmp_path, rng):
    write_file(tmp_path / "a.ome.tiff", _images(rng)[1:])
    assert ingest_section(tmp_path, "S1", DYES, read_fm=False).fm is None
    with pytest.raises(ExportError, match=r"no fluorescence image.*role predict"):
        ingest_section(tmp_path, "S1", DYES)


def test_fm_pixel_not_larger_than_sem_pixel_is_an_error(tmp_path, rng):
    images = _images(rng)
    images[1].pixel_size_m = (2e-7, 2e-7)  # SEM coarser than the FM
    write_file(tmp_path / "a.ome.tiff", images)
    with pytest.raises(ExportError, match=r"FM pixel \(100 nm\) is not larger than the SEM "
                                          "pixel \\(200 nm"):
        ingest_section(tmp_path, "S1", DYES)


def test_constant_channel_is_an_error(tmp_path, rng):
    images = _images(rng)
    images[0].data[1] = 0  # the Insulin channel was not acquired
    write_file(tmp_path / "a.ome.tiff", images)
    with pytest.raises(ExportError, match=r"'Insulin'.*is constant \(all zero\)") as err:
        ingest_section(tmp_path, "S1", DYES)
    assert str(tmp_path / "a.ome.tiff") in str(err.value)
    assert ingest_section(tmp_path, "S1", DYES[:1]).fm is not None  # Hoechst alone is fine


def test_non_square_pixels(tmp_path, rng):
    images = _images(rng)
    images[1].pixel_size_m = (1e-8, 1.2e-8)
    write_file(tmp_path / "a.ome.tiff", images)
    with pytest.raises(ExportError, match=r"SEM image .* non-square pixels"):
        ingest_section(tmp_path, "S1", DYES)
    images = _images(rng)
    images[0].pixel_size_m = (1e-7, 1.1e-7)
    write_file(tmp_path / "a.ome.tiff", images)
    r = ingest_section(tmp_path, "S1", DYES)
    assert any("non-square" in w for w in r.metadata()["warnings"])


def test_predict_section_does_not_decode_fm_only_files(tmp_path, rng, monkeypatch):
    from em2fm.lazy import TiffPlaneReader

    images = _images(rng)
    write_per_stream(tmp_path, "S7", images)
    decoded = []
    real = TiffPlaneReader._segment

    def spy(self, index):
        decoded.append(self.path.name)
        return real(self, index)

    monkeypatch.setattr(TiffPlaneReader, "_segment", spy)
    r = ingest_section(tmp_path, "S1", DYES, read_fm=False)
    assert r.fm is None and r.em.data is None  # headers only; the SEM is read lazily
    np.testing.assert_array_equal(r.em_array(), images[1].data[0])
    assert decoded and all("Secondary" in name for name in decoded), decoded
