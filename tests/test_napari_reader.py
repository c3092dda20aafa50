import importlib
import logging
import tomllib

import numpy as np
import pytest
import tifffile
import yaml
from conftest import ROOT

from em2fm.napari_reader import colormap, get_reader, read_layers, world_affine
from em2fm.odemis import Channel, OdemisImage, read_file, write_file
from em2fm.pyramid import write_array

PACKAGE = ROOT / "src" / "em2fm"


def _prediction(shape_cyx=(2, 700, 600), **geometry) -> OdemisImage:
    data = np.random.default_rng(0).normal(size=shape_cyx).astype(np.float32)
    return OdemisImage(name="Prediction", data=data,
                       channels=[Channel("Hoechst", 405, 450), Channel("Insulin", 590, 617)],
                       shape_cyx=shape_cyx, dtype="float32",
                       **{"pixel_size_m": (1e-7, 1e-7), "centre_m": (1.5e-5, -2.5e-5),
                          "rotation_rad": 0.3, **geometry})


def _world_um(affine: np.ndarray, row: float, col: float) -> np.ndarray:
    return (affine @ [row, col, 1.0])[:2]


def _stage_um(image: OdemisImage, row: float, col: float) -> np.ndarray:
    x, y, _ = image.geometry.pixel_to_stage() @ [col, row, 1.0]
    return np.array([-y, x]) * 1e6


def test_prediction_opens_multiscale_per_channel_at_its_stage_place(tmp_path):
    path = tmp_path / "S001.ome.tif"
    write_array(path, _prediction())
    assert get_reader(str(path)) is read_layers
    (data, kwargs, kind), = read_layers(str(path))
    assert kind == "image" and kwargs["multiscale"]
    assert [d.shape for d in data] == [(2, 700, 600), (2, 350, 300), (2, 175, 150)]
    assert kwargs["channel_axis"] == 0
    assert kwargs["name"] == ["Hoechst", "Insulin"]
    assert kwargs["colormap"] == ["blue", "magenta"]
    np.testing.assert_array_equal(data[0], _prediction().data)
    image = read_file(path, load_pixels=False).images[0]
    for row, col in [(0, 0), (699, 0), (0, 599), (350.5, 123.25)]:  # pixel centres, any point
        np.testing.assert_allclose(_world_um(kwargs["affine"], row, col),
                                   _stage_um(image, row, col), atol=1e-9)
    # the image centre lies at the stage position (world: (−y, x) in µm)
    np.testing.assert_allclose(_world_um(kwargs["affine"], 349.5, 299.5), [25.0, 15.0],
                               atol=1e-9)


def test_odemis_acquisition_overlays_fm_on_em(odemis_sample):
    layers = read_layers(str(odemis_sample))
    odemis = read_file(odemis_sample, load_pixels=False)
    assert len(layers) == len(odemis.images) == 2
    by_name = {img.name: (img, layer) for img, layer in zip(odemis.images, layers, strict=True)}
    fm, (fm_data, fm_kwargs, _) = by_name["Insulin AF594"]
    em, (em_data, em_kwargs, _) = by_name["Backscattered electrons"]
    assert fm_data.shape == (2, 256, 256) and em_data.shape == (2048, 2048)
    assert em_kwargs["colormap"] == "gray" and "channel_axis" not in em_kwargs
    assert fm_kwargs["colormap"] == ["blue", "magenta"]
    # both centres at their metadata positions; the FM is rotated as the file says
    for img, kwargs in ((fm, fm_kwargs), (em, em_kwargs)):
        h, w = img.shape_cyx[1:]
        centre = np.array([-img.centre_m[1], img.centre_m[0]]) * 1e6
        np.testing.assert_allclose(_world_um(kwargs["affine"], (h - 1) / 2, (w - 1) / 2),
                                   centre, atol=1e-6)
        step = _world_um(kwargs["affine"], 0, 1) - _world_um(kwargs["affine"], 0, 0)
        assert np.linalg.norm(step) == pytest.approx(img.pixel_size_m[0] * 1e6)
        assert np.arctan2(-step[0], step[1]) == pytest.approx(
            (img.rotation_rad + np.pi) % (2 * np.pi) - np.pi, abs=1e-9)


def test_images_of_the_same_name_keep_their_own_pixels(tmp_path):
    """Two SEM streams named alike (an Odemis acquisition): each layer gets its own pixels."""
    rng = np.random.default_rng(1)
    images = [OdemisImage(name="Secondary electrons", data=rng.integers(0, 4000, (1, 32, 32),
                                                                        dtype=np.uint16),
                          channels=[Channel("Secondary electrons")], shape_cyx=(1, 32, 32),
                          dtype="uint16", pixel_size_m=(1e-8, 1e-8), centre_m=(dx, 0.0))
              for dx in (0.0, 1e-6)]
    path = tmp_path / "acq.ome.tiff"
    write_file(path, images)
    layers = read_layers(str(path))
    assert len(layers) == 2
    for image, (data, kwargs, _) in zip(images, layers, strict=True):
        np.testing.assert_array_equal(data, image.data[0])
        np.testing.assert_allclose(_world_um(kwargs["affine"], 15.5, 15.5),
                                   [0.0, image.centre_m[0] * 1e6], atol=1e-9)


def test_image_without_position_opens_in_pixels_with_a_warning(tmp_path, caplog):
    path = tmp_path / "p.ome.tif"
    write_array(path, _prediction((2, 40, 30), centre_m=None))
    with caplog.at_level(logging.WARNING):
        (data, kwargs, _), = read_layers([str(path)])
    assert data.shape == (2, 40, 30) and not kwargs["multiscale"]
    assert "affine" not in kwargs
    assert "no pixel size or stage position" in caplog.text and str(path) in caplog.text
    assert world_affine(read_file(path, load_pixels=False).images[0]) is None


def test_reader_declines_what_it_cannot_place(tmp_path):
    plain = tmp_path / "plain.ome.tif"
    tifffile.imwrite(plain, np.zeros((8, 8), np.uint16), ome=False)  # no OME-XML
    broken = tmp_path / "broken.ome.tiff"
    broken.write_bytes(b"not a tiff")
    assert get_reader(str(plain)) is None
    assert get_reader(str(broken)) is None
    assert get_reader(str(ROOT / "README.md")) is None
    good = tmp_path / "good.ome.tif"
    write_array(good, _prediction((2, 16, 16)))
    assert get_reader([str(good)]) is read_layers
    assert get_reader([str(good), str(plain)]) is None


@pytest.mark.parametrize(("emission_nm", "name"),
                         [(None, "gray"), (450, "blue"), (525, "green"), (617, "magenta")])
def test_colormap_by_emission(emission_nm, name):
    assert colormap(emission_nm) == name


def test_napari_manifest_points_at_the_reader():
    manifest = yaml.safe_load((PACKAGE / "napari.yaml").read_text())
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert entry["project"]["entry-points"]["napari.manifest"] == {"em2fm": "em2fm:napari.yaml"}
    assert "napari.yaml" in entry["tool"]["setuptools"]["package-data"]["em2fm"]
    assert manifest["name"] == "em2fm"
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    (reader,) = manifest["contributions"]["readers"]
    module, _, function = commands[reader["command"]].partition(":")
    assert getattr(importlib.import_module(module), function) is get_reader
    assert {"*.ome.tif", "*.ome.tiff"} <= set(reader["filename_patterns"])


def _centre_box_um(affine: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """World bounding box (µm) of an image's corner pixel centres: ((row, col) min, max),
    as napari's ``layer.extent.world`` gives it."""
    h, w = shape_yx
    corners = np.array([affine @ [r, c, 1.0] for r in (0, h - 1) for c in (0, w - 1)])
    return np.array([corners[:, :2].min(0), corners[:, :2].max(0)])


def test_napari_gui_shows_em_fm_and_prediction_in_place(tmp_path, odemis_sample):
    """napari itself (GUI under Xvfb) finds the plugin and places each layer by its metadata."""
    from matplotlib.image import imread
    from napari_check import open_in_napari

    em = next(i for i in read_file(odemis_sample, load_pixels=False).images
              if not i.is_fluorescence)
    prediction = tmp_path / "S001.ome.tif"  # over the EM, 4× its pixel size (2 levels)
    write_array(prediction, _prediction((2, 512, 512), centre_m=em.centre_m, rotation_rad=0.0,
                                        pixel_size_m=tuple(4 * s for s in em.pixel_size_m)))
    layers, shot = open_in_napari([odemis_sample, prediction], tmp_path)
    expected = []
    for path in (odemis_sample, prediction):
        for data, kwargs, _ in read_layers(str(path)):
            level0 = data[0] if kwargs["multiscale"] else data
            names = kwargs["name"] if "channel_axis" in kwargs else [kwargs["name"]]
            box = _centre_box_um(kwargs["affine"], level0.shape[-2:])
            expected += [(name, kwargs["multiscale"], box) for name in names]
    assert len(layers) == len(expected) == 5
    for layer, (name, multiscale, box) in zip(layers, expected, strict=True):
        assert layer["kind"] == "Image" and layer["name"].startswith(name)
        assert layer["multiscale"] == multiscale
        np.testing.assert_allclose([layer["world_min_um"], layer["world_max_um"]], box,
                                   atol=1e-3, err_msg=layer["name"])
    pixels = imread(shot)
    assert pixels.shape[:2] == (600, 600) and pixels[..., :3].std() > 0.02  # not blank
