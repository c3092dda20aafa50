"""Tiled, pyramidal OME-TIFF written band by band, in the Odemis dialect.

Large outputs (a prediction of a 32k² EM section) are written without ever holding
a whole plane in memory:

1. :class:`PlaneSink` takes finished rows ``(C, n, W)`` top to bottom (as
   :meth:`em2fm.inference.WindowedPredictor.iter_rows` yields them) and appends each
   channel to a temporary raw file beside the output;
2. :func:`write_pyramid` builds the reduced levels (2×2 means, each from the level
   above, band by band, also on disk) and writes the OME-TIFF: per channel one tiled
   page (256² px tiles, LZW) with its reduced levels in SubIFDs, BigTIFF when the
   data may exceed 4 GiB.

The layout is the one Odemis uses for its pyramidal exports: one page per channel,
the OME-XML (physical pixel size in µm, plane position in m, channel names and
wavelengths, rotation in a MapAnnotation) in the first page only, reduced levels as
SubIFDs with subfile type 1. Readers: tifffile (``series[0].levels``), Bio-Formats
(Fiji, QuPath; SubIFD pyramids since Bio-Formats 6.0) and napari (through tifffile),
and this workflow's own reader (:func:`em2fm.odemis.read_file`, level 0). Each level
page also carries its own XResolution/YResolution (px/cm) and X/YPosition tags, so the
pixel size and placement of every level can be read without the XML.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from .io import atomic_path
from .odemis import (
    OdemisImage,
    _page_tags,
    _resolution_px_per_cm,
    build_ome_xml,
    tiff_compression,
)

TILE = 256
BAND_ROWS = 512  # rows per read/write band (multiple of TILE and of 2)


class PlaneSink:
    """Rows of a ``(C, H, W)`` float32 image, appended band by band to raw files on disk."""

    def __init__(self, directory: str | Path, shape_cyx: tuple[int, int, int],
                 dtype: str = "float32") -> None:
        self.shape = shape_cyx
        self.dtype = np.dtype(dtype)
        self.rows = 0
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = []
        for _ in range(shape_cyx[0]):
            fd, name = tempfile.mkstemp(prefix=".plane.", suffix=".raw", dir=directory)
            os.close(fd)
            self.paths.append(Path(name))
        self._files = [open(p, "wb") for p in self.paths]  # noqa: SIM115

    def write(self, row0: int, block: np.ndarray) -> None:
        """Append rows ``row0 : row0 + n`` (``block`` is (C, n, W)); rows come in order."""
        if row0 != self.rows:
            raise ValueError(f"rows must come in order: expected {self.rows}, got {row0}")
        if block.shape[0] != self.shape[0] or block.shape[2] != self.shape[2]:
            raise ValueError(f"block {block.shape} does not fit the image {self.shape}")
        for f, plane in zip(self._files, block, strict=True):
            f.write(np.ascontiguousarray(plane, self.dtype).tobytes())
        self.rows += block.shape[1]

    def close(self) -> None:
        """Flush the files (the image must be complete)."""
        for f in self._files:
            f.close()
        if self.rows != self.shape[1]:
            raise ValueError(f"{self.rows} of {self.shape[1]} rows written")

    def remove(self) -> None:
        """Delete the temporary files."""
        for f in self._files:
            f.close()
        for p in self.paths:
            p.unlink(missing_ok=True)


def _read_rows(path: Path, shape_yx: tuple[int, int], dtype: np.dtype, r0: int,
               r1: int) -> np.ndarray:
    w = shape_yx[1]
    return np.fromfile(path, dtype, count=(r1 - r0) * w,
                       offset=r0 * w * dtype.itemsize).reshape(r1 - r0, w)


def _reduce(path: Path, shape_yx: tuple[int, int], dtype: np.dtype, out: Path) -> tuple[int, int]:
    """2×2 mean of a raw plane into ``out`` (odd edges: the last row/column alone)."""
    h, w = shape_yx
    oh, ow = (h + 1) // 2, (w + 1) // 2
    with open(out, "wb") as f:
        for r0 in range(0, h, BAND_ROWS):
            band = _read_rows(path, shape_yx, dtype, r0, min(h, r0 + BAND_ROWS))
            band = band.astype(np.float64)
            if band.shape[0] % 2:
                band = np.concatenate([band, band[-1:]])
            if w % 2:
                band = np.concatenate([band, band[:, -1:]], axis=1)
            small = band.reshape(band.shape[0] // 2, 2, ow, 2).mean((1, 3))
            f.write(small.astype(dtype).tobytes())
    return oh, ow


def _tiles(path: Path, shape_yx: tuple[int, int], dtype: np.dtype) -> Iterator[np.ndarray]:
    """Tiles of a raw plane in TIFF order (tile rows, then columns), band by band."""
    h, w = shape_yx
    for r0 in range(0, h, TILE):
        band = _read_rows(path, shape_yx, dtype, r0, min(h, r0 + TILE))
        for c0 in range(0, w, TILE):
            yield band[:, c0: c0 + TILE]


def n_levels(shape_yx: tuple[int, int], tile: int = TILE) -> int:
    """Reduced levels until the image fits in one tile."""
    return max(0, math.ceil(math.log2(max(shape_yx) / tile))) if max(shape_yx) > tile else 0


def level_image(image: OdemisImage, k: int, shape_yx: tuple[int, int]) -> OdemisImage:
    """Placement of reduced level ``k`` (``2**k`` × the pixel size; its own centre).

    Level ``k`` pixel ``i`` averages full-resolution pixels ``[i·2**k, (i+1)·2**k)``
    (the last ones repeated at odd edges), so its centre lies half the padding away
    from the full image's centre.
    """
    f = 2**k
    px = None if image.pixel_size_m is None else (image.pixel_size_m[0] * f,
                                                  image.pixel_size_m[1] * f)
    centre = image.centre_m
    if centre is not None and image.pixel_size_m is not None:
        g = image.geometry
        mid = np.array([(f * shape_yx[1] - 1) / 2, (f * shape_yx[0] - 1) / 2, 1.0])
        x, y, _ = g.pixel_to_stage() @ mid
        centre = (float(x), float(y))
    return OdemisImage(name=image.name, data=None, channels=image.channels,
                       shape_cyx=(image.shape_cyx[0], *shape_yx), dtype=image.dtype,
                       pixel_size_m=px, centre_m=centre, rotation_rad=image.rotation_rad,
                       shear=image.shear)


def write_pyramid(path: str | Path, image: OdemisImage, sink: PlaneSink,
                  software: str = "em2fm", compress: bool = True) -> None:
    """Write ``sink``'s planes as a tiled pyramidal OME-TIFF described by ``image``.

    Args:
        path: output ``.ome.tif``; written to a temporary name and renamed.
        image: metadata (``data`` may be None; ``shape_cyx`` = the sink's shape).
        sink: the complete planes (closed); its temporary files are removed.
        software: the TIFF Software tag.
        compress: as :func:`em2fm.odemis.tiff_compression` says (floats: deflate, which
            Fiji's Bio-Formats reads; integers: LZW with predictor, Odemis's default).
    """
    c, h, w = sink.shape
    dtype = sink.dtype
    levels = n_levels((h, w))
    xml = build_ome_xml([image], [0], None, None, None).encode("utf-8")
    bigtiff = c * h * w * dtype.itemsize * 4 / 3 > 2**32 - 2**25
    reduced: list[list[tuple[Path, tuple[int, int]]]] = []
    try:
        for ci in range(c):
            chain = []
            src, shape = sink.paths[ci], (h, w)
            for _ in range(levels):
                fd, name = tempfile.mkstemp(prefix=".level.", suffix=".raw",
                                            dir=sink.paths[ci].parent)
                os.close(fd)
                shape = _reduce(src, shape, dtype, Path(name))
                src = Path(name)
                chain.append((src, shape))
            reduced.append(chain)
        with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            for ci, ch in enumerate(image.channels):
                common = dict(dtype=dtype, tile=(TILE, TILE), photometric="minisblack",
                              metadata=None, **tiff_compression(dtype, compress),
                              resolutionunit="CENTIMETER" if image.pixel_size_m else None)
                tw.write(_tiles(sink.paths[ci], (h, w), dtype), shape=(h, w),
                         description=xml if ci == 0 else None, subifds=levels,
                         software=software,
                         resolution=_resolution_px_per_cm(image.pixel_size_m),
                         extratags=_page_tags(image, ch), **common)
                for k, (src, shape) in enumerate(reduced[ci], 1):
                    level = level_image(image, k, shape)
                    tw.write(_tiles(src, shape, dtype), shape=shape, subfiletype=1,
                             software=False, resolution=_resolution_px_per_cm(
                                 level.pixel_size_m), extratags=_page_tags(level, ch),
                             **common)
    finally:
        sink.remove()
        for chain in reduced:
            for p, _ in chain:
                p.unlink(missing_ok=True)


def write_array(path: str | Path, image: OdemisImage, software: str = "em2fm") -> None:
    """Write an in-memory image (``image.data``, (C, Y, X)) as a pyramidal OME-TIFF."""
    assert image.data is not None
    data = np.asarray(image.data, np.dtype(image.dtype))
    sink = PlaneSink(Path(path).parent, data.shape, image.dtype)
    try:
        for r0 in range(0, data.shape[1], BAND_ROWS):
            sink.write(r0, data[:, r0: r0 + BAND_ROWS])
        sink.close()
    except BaseException:
        sink.remove()
        raise
    write_pyramid(path, image, sink, software)
