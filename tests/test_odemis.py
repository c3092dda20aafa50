import math
from pathlib import Path

import numpy as np
import pytest
import tifffile

from em2fm.odemis import Channel, ExportError, OdemisImage, read_file, write_file, write_per_stream


def test_reads_the_odemis_written_sample(odemis_sample):
    f = read_file(odemis_sample)
    assert f.dialect == "2016-06"
    assert f.has_thumbnail
    assert f.software.startswith("Odemis 3.8")
    fm, em = f.images  # the RGB thumbnail is skipped
    assert fm.is_fluorescence and not em.is_fluorescence
    assert [c.name for c in fm.channels] == ["Hoechst", "Insulin AF594"]
    assert fm.name == "Insulin AF594"  # merged FM image is named after its LAST channel
    assert [(c.excitation_nm, c.emission_nm) for c in fm.channels] == [(405, 450), (590, 617)]
    assert fm.shape_cyx == (2, 256, 256) and fm.data.shape == (2, 256, 256)
    assert fm.data.dtype == np.uint16
    assert fm.pixel_size_m == pytest.approx((1.6032e-7, 1.6032e-7))
    assert fm.centre_m == pytest.approx((1.0301e-3, 6.371e-3))
    assert fm.rotation_rad == pytest.approx(0.0123)
    assert fm.ifds == [1, 2]
    assert em.name == "Backscattered electrons"
    assert em.shape_cyx == (1, 2048, 2048)
    assert em.pixel_size_m == pytest.approx((6e-9, 6e-9))
    assert em.centre_m == pytest.approx((1.0256e-3, 6.3715e-3))
    assert em.rotation_rad == 0
    assert em.exposure_time_s == pytest.approx(2e-6)
    assert em.voltage_v == pytest.approx(5000)
    assert em.current_a == pytest.approx(8e-10)
    assert em.extra_settings["Stage"]["position"][0] == {"x": 0.0010256, "y": 0.0063715}


def test_pixels_match_tifffile_pages(odemis_sample):
    f = read_file(odemis_sample)
    with tifffile.TiffFile(odemis_sample) as t:
        np.testing.assert_array_equal(f.images[0].data[1], t.pages[2].asarray())
        np.testing.assert_array_equal(f.images[1].data[0], t.pages[3].asarray())


def test_metadata_only_read(odemis_sample):
    f = read_file(odemis_sample, load_pixels=False)
    assert f.images[0].data is None and f.images[0].shape_cyx == (2, 256, 256)


def _images(rng) -> list[OdemisImage]:
    fm = rng.integers(100, 4000, size=(2, 40, 50), dtype=np.uint16)
    em = rng.integers(0, 60000, size=(1, 300, 300), dtype=np.uint16)
    return [
        OdemisImage("Alexa", fm, [Channel("Hoechst", 405, 450), Channel("Alexa", 590, 617)],
                    fm.shape, "uint16", (1e-7, 1e-7), (1.001e-3, -2e-3), rotation_rad=0.11,
                    acquisition_date="2026-01-02T03:04:05", exposure_time_s=0.3,
                    detector="cam"),
        OdemisImage("SE", em, [Channel("SE")], em.shape, "uint16", (1e-8, 1e-8),
                    (1.0e-3, -2e-3), exposure_time_s=2e-6, voltage_v=3000, current_a=1e-10,
                    extra_settings={"Stage": {"position": [{"x": 1e-3}, "m"]}}),
    ]


def test_write_read_round_trip(tmp_path, rng):
    images = _images(rng)
    path = tmp_path / "acq.ome.tiff"
    write_file(path, images)
    f = read_file(path)
    assert f.has_thumbnail and f.dialect == "2016-06"
    for a, b in zip(images, f.images, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
        assert b.centre_m == pytest.approx(a.centre_m, abs=1e-15)
        assert b.pixel_size_m == pytest.approx(a.pixel_size_m)
        assert b.rotation_rad == pytest.approx(a.rotation_rad)
        assert [c.name for c in b.channels] == [c.name for c in a.channels]
    assert f.images[1].extra_settings == images[1].extra_settings
    with tifffile.TiffFile(path) as t:
        assert t.pages[0].subfiletype == 1  # thumbnail is a reduced image
        page = t.pages[1]
        assert page.compression == 5  # LZW, as Odemis writes
        assert page.tags["PageName"].value == "Hoechst"
        num, den = page.tags["XPosition"].value
        assert num / den == pytest.approx(100 + 1.001e-3 * 100, abs=1e-4)  # cm + 100
        assert page.tags["XResolution"].value[0] / page.tags["XResolution"].value[1] == (
            pytest.approx(1e5))  # px/cm
        assert t.pages[2].description == ""  # OME-XML only in the first page


def test_no_partial_file_on_failure(tmp_path, rng):
    images = _images(rng)
    images[1].data = None  # cannot be written
    path = tmp_path / "bad.ome.tiff"
    with pytest.raises(AssertionError):
        write_file(path, images)
    assert list(tmp_path.iterdir()) == []


def test_per_stream_files(tmp_path, rng):
    paths = write_per_stream(tmp_path, "acq", _images(rng))
    assert [p.name for p in paths] == ["acq_Hoechst.ome.tiff", "acq_Alexa.ome.tiff",
                                       "acq_SE.ome.tiff"]
    f = read_file(paths[1])
    assert not f.has_thumbnail
    assert len(f.images) == 1 and f.images[0].channels[0].excitation_nm == 590


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy an OME-TIFF, transforming the OME-XML with ``edit``."""
    with tifffile.TiffFile(src) as t:
        desc = t.pages[0].description
        pages = [(p.asarray(), p.subfiletype) for p in t.pages]
    with tifffile.TiffWriter(dst) as w:
        for k, (data, sub) in enumerate(pages):
            w.write(data, description=edit(desc).encode() if k == 0 else None, metadata=None,
                    subfiletype=sub, photometric="rgb" if data.ndim == 3 else "minisblack")


def test_dialect_2012_with_imagej_header_bare_positions_and_legacy_transform(tmp_path, rng):
    src = tmp_path / "new.ome.tiff"
    write_file(src, _images(rng))
    rot, shear = 0.2, 0.0

    def old(xml: str) -> str:
        xml = xml.replace("OME/2016-06", "OME/2012-06")
        xml = xml.replace(' PositionXUnit="m"', "").replace(' PositionYUnit="m"', "")
        xml = xml.replace('<M K="Rotation">0.110000000000000</M>', "")
        a = [[math.cos(rot), math.sin(rot)], [-math.sin(rot), math.cos(rot)]]
        legacy = (f'<Transform A00="{a[0][0]}" A01="{a[0][1]}" A02="0" A10="{a[1][0]}" '
                  f'A11="{a[1][1]}" A12="0" />')
        xml = xml.replace('<Image ID="Image:1" Name="Alexa">',
                          f'<Image ID="Image:1" Name="Alexa">{legacy}')
        return "ImageJ=1.11a\nimages=4\nhyperstack=true\nunit=cm\n" + xml

    dst = tmp_path / "old.ome.tiff"
    _rewrite(src, dst, old)
    f = read_file(dst)
    assert f.dialect == "2012-06"
    assert any("header" in w for w in f.warnings)
    fm = f.images[0]
    assert fm.centre_m == pytest.approx((1.001e-3, -2e-3))  # bare numbers are metres
    assert fm.rotation_rad == pytest.approx(rot)
    assert fm.shear == pytest.approx(shear, abs=1e-12)


def test_not_an_ome_tiff(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint16), description="just a tiff")
    with pytest.raises(ExportError, match="no OME-XML") as e:
        read_file(path)
    assert str(path) in str(e.value) and "Fix:" in str(e.value)


def test_not_a_tiff(tmp_path):
    path = tmp_path / "x.ome.tiff"
    path.write_text("hello")
    with pytest.raises(ExportError, match="not a readable TIFF"):
        read_file(path)


def test_missing_page_is_reported(tmp_path, rng):
    src = tmp_path / "a.ome.tiff"
    write_file(src, _images(rng))
    dst = tmp_path / "b.ome.tiff"
    _rewrite(src, dst, lambda x: x.replace('TiffData IFD="3"', 'TiffData IFD="9"'))
    with pytest.raises(ExportError, match="no TIFF page"):
        read_file(dst)
