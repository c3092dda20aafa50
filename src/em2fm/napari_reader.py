"""A napari reader: Odemis and em2fm OME-TIFFs at their stage position and pixel size.

napari's built-in TIFF reader opens the pixels of an OME-TIFF without its physical pixel
size or stage position, so a prediction (4× coarser than the EM) and the EM of the same
section do not overlay. This reader (a napari plugin, declared in ``napari.yaml`` and
found by napari once the package is installed: ``pip install -e .`` beside napari) opens

- an Odemis acquisition or export (EM and FM streams),
- this workflow's outputs (``results/predictions/{section}.ome.tif``, its uncertainty, the
  registered FM)

with every image placed by its metadata alone: napari's world coordinates are the stage
frame in µm, rows downwards (world ``(row, col) = (−y, x)`` for stage ``(x, y)``), so the
stage's Y axis points up on screen as in Odemis. Pixel centres map exactly where
:meth:`em2fm.geometry.ImageGeometry.pixel_to_stage` puts them (rotation and shear
included). Pyramidal files open as multiscale layers (their SubIFD levels). A
multichannel image becomes one layer per channel, coloured by emission wavelength.
Every level is read into memory when the file opens (about 4/3 of the full-resolution
pixels: 2.7 GiB for a 32k² px 16-bit EM image).

Nothing here imports napari: the reader returns napari's "layer data" tuples, tested
without it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np
import tifffile

from .odemis import ExportError, OdemisImage, extract_ome_xml, read_file

log = logging.getLogger(__name__)

SUFFIXES = (".ome.tif", ".ome.tiff")
# napari colormap by emission wavelength (nm): upper bound → name; EM (no wavelength) gray
COLOURS = ((500.0, "blue"), (570.0, "green"), (float("inf"), "magenta"))

LayerData = tuple[object, dict, str]


def world_affine(image: OdemisImage) -> np.ndarray | None:
    """3×3 affine from napari data ``(row, col, 1)`` in px to world ``(row, col, 1)`` in µm.

    World is the stage frame in µm with rows downwards: ``(−y, x)``. ``None`` when the
    image lacks a pixel size or position.
    """
    try:
        pixel_to_stage = image.geometry.pixel_to_stage()  # (col, row, 1) → (x, y, 1) m
    except ValueError:
        return None
    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # (row, col) ↔ (col, row)
    to_world = np.diag([-1e6, 1e6, 1.0]) @ swap  # (x, y, 1) m → (−y, x, 1) µm
    return to_world @ pixel_to_stage @ swap


def colormap(emission_nm: float | None) -> str:
    """napari colormap name for a channel of this emission wavelength (nm; None: EM)."""
    if emission_nm is None:
        return "gray"
    return next(name for bound, name in COLOURS if emission_nm < bound)


def _cyx(data: np.ndarray, axes: str) -> np.ndarray:
    """``data`` with tifffile ``axes`` (``YX``, ``CYX``, ``YXS``; singletons squeezed) as CYX."""
    axes = axes.replace("S", "C")
    return np.moveaxis(data, axes.index("C"), 0) if "C" in axes else data[np.newaxis]


def _levels(tif: tifffile.TiffFile, image: OdemisImage, used: set[int]) -> list[np.ndarray]:
    """Pixel levels (C, Y, X) of ``image``, full resolution first, read into memory.

    The pyramid comes from the first of tifffile's OME series not yet ``used`` with the
    image's name and size (its SubIFD levels); otherwise the channel pages alone (one level).
    """
    size = int(np.prod(image.shape_cyx))
    for k, series in enumerate(tif.series):
        if k not in used and series.name == image.name and int(np.prod(series.shape)) == size:
            used.add(k)
            return [_cyx(level.asarray(), series.axes) for level in series.levels]
    return [np.stack([tif.pages[i].asarray() for i in image.ifds])]


def _layers(image: OdemisImage, levels: list[np.ndarray]) -> LayerData:
    """napari layer data of one image: one layer per channel, placed on the stage."""
    affine = world_affine(image)
    kwargs: dict = {"multiscale": len(levels) > 1,
                    "metadata": {"source": image.source, "image": image.name}}
    if affine is not None:
        kwargs["affine"] = affine
    else:
        log.warning("%s: image %r has no pixel size or stage position; opened in pixels",
                    image.source, image.name)
    names = [c.name or image.name for c in image.channels]
    colours = [colormap(c.emission_nm) for c in image.channels]
    if len(image.channels) == 1:
        data = [lv[0] for lv in levels]
        kwargs.update(name=names[0], colormap=colours[0])
    else:
        data = levels
        kwargs.update(channel_axis=0, name=names, colormap=colours, blending="additive")
    return (data if len(levels) > 1 else data[0], kwargs, "image")


def read_layers(path: str | os.PathLike | list) -> list[LayerData]:
    """Layer data of every image in an Odemis-dialect OME-TIFF (one file or a list)."""
    if isinstance(path, list):
        return [layer for p in path for layer in read_layers(p)]
    odemis = read_file(path, load_pixels=False)
    used: set[int] = set()
    with tifffile.TiffFile(path) as tif:
        return [_layers(image, _levels(tif, image, used)) for image in odemis.images]


def get_reader(path: str | os.PathLike | list) -> Callable[..., list[LayerData]] | None:
    """napari's reader hook: :func:`read_layers` for OME-TIFFs with OME-XML, else None."""
    paths = path if isinstance(path, list) else [path]
    for p in paths:
        if not str(p).lower().endswith(SUFFIXES):
            return None
        try:
            with tifffile.TiffFile(p) as tif:
                if extract_ome_xml(tif.pages[0].description or "") is None:
                    return None
        except (OSError, tifffile.TiffFileError, ValueError, ExportError):
            return None
    return read_layers


__all__ = ["colormap", "get_reader", "read_layers", "world_affine"]
