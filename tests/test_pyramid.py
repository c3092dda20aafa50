import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tifffile
from bioformats_check import bioformats

from em2fm.odemis import Channel, OdemisImage, read_file
from em2fm.pyramid import PlaneSink, n_levels, write_array, write_pyramid


def _image(data: np.ndarray) -> OdemisImage:
    return OdemisImage(name="Prediction", data=data,
                       channels=[Channel("Hoechst", 405, 450), Channel("Insulin", 590, 617)],
                       shape_cyx=data.shape, dtype="float32", pixel_size_m=(1e-7, 1e-7),
                       centre_m=(1.5e-5, -2.5e-5), rotation_rad=0.0)


def test_pyramid_metadata_round_trips_through_tifffile(tmp_path):
    data = np.random.default_rng(0).normal(size=(2, 700, 600)).astype(np.float32)
    path = tmp_path / "p.ome.tif"
    write_array(path, _image(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.ome.tif"]  # no temp files left
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert series.axes == "CYX"
        shapes = [lv.shape for lv in series.levels]
        assert shapes == [(2, 700, 600), (2, 350, 300), (2, 175, 150)]
        np.testing.assert_array_equal(series.levels[0].asarray(), data)
        np.testing.assert_allclose(series.levels[1].asarray(),
                                   data.reshape(2, 350, 2, 300, 2).mean((2, 4)), atol=1e-6)
        for k, lv in enumerate(series.levels):
            page = lv.keyframe
            assert page.is_tiled and page.tile == (256, 256)
            assert page.subfiletype == (1 if k else 0)
            # pixel size per level: XResolution in px/cm
            assert 0.01 / page.resolution[0] == pytest.approx(1e-7 * 2**k)
            # position: Odemis's XPosition tag, cm + 100 in 1/65536 cm steps (0.15 µm)
            xpos = page.tags["XPosition"].value
            assert (xpos[0] / xpos[1] - 100) / 100 == pytest.approx(1.5e-5, abs=2e-7)
        assert tif.pages[0].subifds is not None and len(tif.pages[0].subifds) == 2
        # what Bio-Formats reads: OME-XML physical size (µm), plane position (m), channels
        root = ET.fromstring(tif.pages[0].description)
        ns = {"ome": root.tag.split("}")[0][1:]}
        px = root.find(".//ome:Pixels", ns)
        assert px.get("PhysicalSizeX") is not None and float(px.get("PhysicalSizeX")) == 0.1
        assert px.get("PhysicalSizeXUnit") == "µm"
        plane = root.find(".//ome:Plane", ns)
        assert float(plane.get("PositionX")) == 1.5e-5 and plane.get("PositionXUnit") == "m"
        names = [c.get("Name") for c in root.findall(".//ome:Channel", ns)]
        assert names == ["Hoechst", "Insulin"]
    # and the workflow reads its own output (level 0) with its placement
    img = read_file(path).images[0]
    np.testing.assert_array_equal(img.data, data)
    assert img.pixel_size_m == pytest.approx((1e-7, 1e-7))
    assert img.centre_m == pytest.approx((1.5e-5, -2.5e-5))
    assert [c.excitation_nm for c in img.channels] == [405, 590]


def test_ome_xml_is_valid_against_the_ome_schema(tmp_path):
    """What Bio-Formats (Fiji) parses first: the prediction's OME-XML validates against the OME
    2016-06 schema (bundled with ome-types, read offline), and the check catches a bad value.
    (Odemis's own exports do not validate: their RGB thumbnail has DimensionOrder CXYZT.)"""
    from ome_types import validate_xml

    path = tmp_path / "p.ome.tif"
    write_array(path, _image(np.zeros((2, 300, 300), np.float32)))
    with tifffile.TiffFile(path) as tif:
        xml = tif.pages[0].description
    validate_xml(xml, warn_on_schema_update=False)
    bad = xml.replace('PhysicalSizeX="0.1', 'PhysicalSizeX="-0.1', 1)
    assert bad != xml
    with pytest.raises(Exception, match="greater than 0"):
        validate_xml(bad, warn_on_schema_update=False)


def test_bioformats_reads_every_level_at_its_scale(tmp_path):
    """What Fiji opens: Bio-Formats (its reader, bioformats_check.py) finds the 3 levels, the
    pixel size, stage position and channels, and reads every level's pixels as written (it
    cannot decode the floating-point predictor that tifffile picks for float32)."""
    data = np.random.default_rng(0).normal(size=(2, 700, 600)).astype(np.float32)
    path = tmp_path / "p.ome.tif"
    write_array(path, _image(data))
    info = bioformats("ImageInfo", "-nopix", "-noflat", "-omexml", path)
    assert "Resolutions = 3" in info and "mismatch" not in info
    for attr in ('PhysicalSizeX="0.1"', 'PhysicalSizeXUnit="µm"', 'PositionX="1.5E-5"',
                 'PositionY="-2.5E-5"', 'Name="Hoechst"', 'Name="Insulin"'):
        assert attr in info, attr
    for k in range(3):  # bfconvert: each resolution is a series of its own
        out = tmp_path / f"level{k}.tif"
        bioformats("ImageConverter", "-series", str(k), path, out)
        f = 2**k
        expected = data.reshape(2, 700 // f, f, 600 // f, f).mean((2, 4))
        np.testing.assert_allclose(tifffile.imread(out), expected, atol=1e-6)


def test_sink_takes_rows_in_order_and_removes_its_files(tmp_path):
    sink = PlaneSink(tmp_path, (1, 10, 4))
    sink.write(0, np.ones((1, 6, 4)))
    with pytest.raises(ValueError, match="in order"):
        sink.write(7, np.ones((1, 3, 4)))
    sink.write(6, np.zeros((1, 4, 4)))
    sink.close()
    write_pyramid(tmp_path / "x.ome.tif", OdemisImage("x", None, [Channel("a")], (1, 10, 4),
                                                      "float32", (1e-7, 1e-7), (0.0, 0.0)),
                  sink)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.tif"]
    with tifffile.TiffFile(tmp_path / "x.ome.tif") as tif:
        assert tif.series[0].asarray()[:6].min() == 1 and len(tif.series[0].levels) == 1


def test_levels_until_one_tile():
    assert n_levels((256, 256)) == 0
    assert n_levels((257, 10)) == 1
    assert n_levels((8192, 8192)) == 5
