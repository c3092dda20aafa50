"""Lazy EM: read regions of a large 2-D image from disk, prepare them window by window.

- :class:`RawRegionReader` reads ``[r0:r1, c0:c1]`` of a C-ordered 2-D array stored
  uncompressed in a file (a ``.npy``, or a member of an uncompressed ``.npz`` such as
  ingest's ``{section}.npz``) with positioned reads: no memory map (whose resident pages
  would count in RSS), nothing but the region in memory. :func:`open_array` opens
  either.
- :class:`TiffPlaneReader` reads regions of one page (plane) of a TIFF file, such as the
  SEM image of an Odemis OME-TIFF: only the strips or tiles the region touches are read
  and decoded (LZW through imagecodecs, as tifffile does), the last few kept in a small
  cache. :func:`open_plane` opens the plane of one channel of an
  :class:`em2fm.odemis.OdemisImage`. A page written as a single strip (Odemis's
  non-pyramidal exports) can only be decoded whole: then that one plane is the bound.
- :class:`PreparedEM` is the lazy counterpart of :func:`em2fm.tiles.prepare_em`: the EM
  smoothed and resampled to the work grid and z-scored, computed for a region on demand
  (with a halo for the anti-aliasing Gaussian, so that it equals the whole-image result);
  the section mean and std come from two streaming passes that add in numpy's order, so
  the result is :func:`em2fm.tiles.prepare_em`'s bit for bit. It is an
  :class:`em2fm.inference.EMSource`.

Peak memory is one window's EM (plus halo) and one band of statistics, whatever the
section size.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
from scipy import ndimage

from .geometry import ImageGeometry, reflect_index

if TYPE_CHECKING:  # tiles imports this module (torch-free: ingest, tiles and register use it)
    from .tiles import TargetGrid


class RawRegionReader:
    """Regions of a C-ordered 2-D array stored raw at ``offset`` in ``path``.

    Attributes:
        shape: (rows, cols) in px.
        bytes_read: bytes read so far (for tests and benchmarks).
        max_read: the largest single region read, in bytes.
    """

    def __init__(self, path: str | Path, offset: int, shape: tuple[int, int],
                 dtype: np.dtype | str) -> None:
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.bytes_read = 0
        self.max_read = 0
        self._fd = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``array[r0:r1, c0:c1]`` (inside the array), as a new array."""
        h, w = self.shape
        if not (0 <= r0 <= r1 <= h and 0 <= c0 <= c1 <= w):
            raise IndexError(f"region [{r0}:{r1}, {c0}:{c1}] outside {self.shape}")
        item = self.dtype.itemsize
        out = np.empty((r1 - r0, c1 - c0), self.dtype)
        if c1 - c0 > w // 2:  # wide: one read of whole rows, then crop
            buf = os.pread(self._fd, (r1 - r0) * w * item, self.offset + r0 * w * item)
            out[:] = np.frombuffer(buf, self.dtype).reshape(r1 - r0, w)[:, c0:c1]
            n = len(buf)
        else:
            n = 0
            for i, r in enumerate(range(r0, r1)):
                buf = os.pread(self._fd, (c1 - c0) * item, self.offset + (r * w + c0) * item)
                out[i] = np.frombuffer(buf, self.dtype)
                n += len(buf)
        self.bytes_read += n
        self.max_read = max(self.max_read, n)
        return out


class TiffPlaneReader:
    """Regions of one 2-D page of a TIFF file, decoding only the segments they touch.

    Attributes:
        shape: (rows, cols) in px.
        bytes_read: encoded bytes read so far (for tests and benchmarks).
        max_decoded: the largest amount decoded for one region, in bytes.
    """

    CACHE_BYTES = 32 << 20  # decoded segments kept (the most recent always)

    def __init__(self, path: str | Path, page: int) -> None:
        self.path = Path(path)
        self._tif = tifffile.TiffFile(self.path)
        self._page = self._tif.pages[page]
        p = self._page
        if p.samplesperpixel != 1 or p.imagedepth != 1 or len(p.shaped) != 5 or (
                p.shaped[0] != 1):
            self.close()
            raise ValueError(f"{self.path}: page {page} is not a single-channel 2-D plane "
                             f"(shape {p.shape})")
        self.shape = (int(p.imagelength), int(p.imagewidth))
        self.dtype = np.dtype(p.dtype)
        if p.is_tiled:
            self._seg = (int(p.tilelength), int(p.tilewidth))
        else:
            self._seg = (int(min(p.rowsperstrip, self.shape[0])), self.shape[1])
        self._ncols = -(-self.shape[1] // self._seg[1])
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.bytes_read = 0
        self.max_decoded = 0

    def close(self) -> None:
        """Close the file."""
        self._tif.close()

    def _segment(self, index: int) -> np.ndarray:
        """Decoded segment ``index`` (rows, cols of its own size, cropped to the image)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        p = self._page
        offset, count = p.dataoffsets[index], p.databytecounts[index]
        fh = self._tif.filehandle
        if count:
            with fh.lock:
                fh.seek(offset)
                data = fh.read(count)
            self.bytes_read += len(data)
        else:
            data = None
        try:
            seg, pos, shape = p.decode(data, index)
        except (ValueError, NotImplementedError) as exc:
            raise ValueError(f"{self.path}: cannot decode segment {index} of page "
                             f"{p.index} ({exc}); install the 'imagecodecs' package "
                             "(needed for LZW-compressed pages)") from exc
        r0, c0 = pos[2], pos[3]
        h, w = min(shape[1], self.shape[0] - r0), min(shape[2], self.shape[1] - c0)
        if seg is None:
            out = np.zeros((h, w), self.dtype)
        else:
            out = np.asarray(seg).reshape(seg.shape[-3], seg.shape[-2])[:h, :w]
        self._cache[index] = out
        while len(self._cache) > 1 and sum(a.nbytes for a in self._cache.values()) > (
                self.CACHE_BYTES):
            self._cache.popitem(last=False)
        return out

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """``plane[r0:r1, c0:c1]`` (inside the plane), as a new array."""
        h, w = self.shape
        if not (0 <= r0 <= r1 <= h and 0 <= c0 <= c1 <= w):
            raise IndexError(f"region [{r0}:{r1}, {c0}:{c1}] outside {self.shape}")
        out = np.empty((r1 - r0, c1 - c0), self.dtype)
        sh, sw = self._seg
        decoded = 0
        for i in range(r0 // sh, -(-r1 // sh) if r1 > r0 else r0 // sh):
            for j in range(c0 // sw, -(-c1 // sw) if c1 > c0 else c0 // sw):
                seg = self._segment(i * self._ncols + j)
                decoded += seg.nbytes
                a, b = max(r0, i * sh), min(r1, (i + 1) * sh)
                c, d = max(c0, j * sw), min(c1, (j + 1) * sw)
                out[a - r0:b - r0, c - c0:d - c0] = seg[a - i * sh:b - i * sh,
                                                        c - j * sw:d - j * sw]
        self.max_decoded = max(self.max_decoded, decoded)
        return out


def open_plane(image, channel: int = 0) -> TiffPlaneReader:
    """A lazy reader of one channel of an :class:`em2fm.odemis.OdemisImage` (its source page).

    Raises:
        ValueError: naming the file, when the page's shape differs from the OME-XML's.
    """
    reader = TiffPlaneReader(image.source, image.ifds[channel])
    if reader.shape != tuple(image.shape_cyx[1:]):
        reader.close()
        raise ValueError(f"{image.source}: page {image.ifds[channel]} has shape "
                         f"{reader.shape}, but the OME-XML says {tuple(image.shape_cyx[1:])}; "
                         "the file was modified after acquisition: use the original export")
    return reader


def _npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def open_array(path: str | Path, key: str | None = None) -> RawRegionReader:
    """A lazy reader of a 2-D ``.npy`` file, or of member ``key`` of an uncompressed ``.npz``.

    Raises:
        ValueError: naming the file, when the array is compressed, not 2-D or not C-ordered
            (then it cannot be read region by region).
    """
    path = Path(path)
    if key is None:
        with open(path, "rb") as fh:
            shape, fortran, dtype = _npy_header(fh)
            offset = fh.tell()
    else:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: array {key!r} is compressed and cannot be read "
                                 "region by region; write it with numpy.savez (uncompressed)")
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(
                local[28:30], "little")
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            shape, fortran, dtype = _npy_header(fh)
            offset = fh.tell()
    if len(shape) != 2 or fortran:
        raise ValueError(f"{path}: {key or 'array'} is not a C-ordered 2-D image (shape "
                         f"{shape}); cannot read it region by region")
    return RawRegionReader(path, offset, shape, dtype)


PERCENTILE_SAMPLES = 4_000_000  # work px sampled for the percentile normalisation
LEAF = 1 << 20  # work px per leaf of the streamed pairwise sums (at most)


#: EM px (halo included) prepared at once by :meth:`PreparedEM._raw` (about 64 MiB in
#: float32; the Gaussian and the sampling hold about three times that).
RAW_STRIP_PX = 2**24


class PreparedEM:
    """The EM on a target grid's work grid, z-scored, computed region by region.

    Equals :func:`em2fm.tiles.prepare_em` of the whole image bit for bit (z-score): the
    same Gaussian anti-aliasing (σ = 0.5·factor EM px, truncated at 3σ, nearest at the
    image edges) and the same linear sampling, computed on the region plus a halo, and the
    mean and std summed in numpy's order (:meth:`_zscore_statistics`).
    """

    def __init__(self, reader, em_geometry: ImageGeometry, grid: TargetGrid,
                 band_rows: int = 256, normalisation: str = "zscore") -> None:
        self.reader = reader
        self.shape = grid.work_shape_yx
        self.factor = grid.work_pixel_size_m / float(em_geometry.pixel_size_m[0])
        self.sigma = 0.5 * self.factor if self.factor > 1 else 0.0
        self.halo = (int(3.0 * self.sigma + 0.5) if self.sigma > 0 else 0) + 2
        eh, ew = reader.shape
        if (int(eh // self.factor) < self.shape[0]) or (int(ew // self.factor) < self.shape[1]):
            raise ValueError(f"EM work image {(int(eh // self.factor), int(ew // self.factor))}"
                             f" smaller than the grid {self.shape}")
        if normalisation not in ("zscore", "percentile"):
            raise ValueError(f"EM normalisation {normalisation!r}: use zscore or percentile")
        self.mean, self.std = 0.0, 1.0
        self.mean, self.std = self._statistics(band_rows, normalisation)

    def _raw(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Prepared (not z-scored) work px ``[r0:r1, c0:c1]``, all inside the grid.

        Computed in strips of work rows whose EM (with halo) holds about
        :data:`RAW_STRIP_PX` px, so that a large window (a 512-px window at 5 nm EM and
        110 nm FM px is 11k² EM px) never holds its whole EM region in float32.
        """
        f = self.factor
        if f == 1.0:
            return self.reader.read(r0, r1, c0, c1).astype(np.float32)
        strip = max(1, int(RAW_STRIP_PX / (f * f * max(1, c1 - c0))))
        if r1 - r0 <= strip:
            return self._raw_block(r0, r1, c0, c1)
        out = np.empty((r1 - r0, c1 - c0), np.float32)
        for s0 in range(r0, r1, strip):
            s1 = min(r1, s0 + strip)
            out[s0 - r0: s1 - r0] = self._raw_block(s0, s1, c0, c1)
        return out

    def _raw_block(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """:meth:`_raw` of one block: its EM plus halo read, smoothed and sampled."""
        f = self.factor
        eh, ew = self.reader.shape
        rows = (np.arange(r0, r1) + 0.5) * f - 0.5
        cols = (np.arange(c0, c1) + 0.5) * f - 0.5
        a = max(0, math.floor(rows[0]) - self.halo)
        b = min(eh, math.ceil(rows[-1]) + self.halo + 1)
        c = max(0, math.floor(cols[0]) - self.halo)
        d = min(ew, math.ceil(cols[-1]) + self.halo + 1)
        img = self.reader.read(a, b, c, d).astype(np.float32)
        if self.sigma > 0:
            img = ndimage.gaussian_filter(img, self.sigma, mode="nearest", truncate=3.0)
        out = ndimage.map_coordinates(img, np.meshgrid(rows - a, cols - c, indexing="ij"),
                                      order=1, mode="nearest")
        return out.astype(np.float32)

    def _statistics(self, band_rows: int, normalisation: str = "zscore"
                    ) -> tuple[float, float]:
        """Offset and scale of the normalisation, streamed block by block.

        ``zscore``: mean and std of the work image. ``percentile``: the
        :data:`em2fm.tiles.EM_PERCENTILES` map to ±2 (as :func:`em2fm.tiles.normalise_em`),
        from a regular subsample of at most :data:`PERCENTILE_SAMPLES` work px.
        """
        h, w = self.shape
        if normalisation == "percentile":
            from .tiles import EM_PERCENTILES

            step = max(1, math.ceil(math.sqrt(h * w / PERCENTILE_SAMPLES)))
            samples = []
            for r0 in range(0, h, band_rows):
                for c0 in range(0, w, 4 * band_rows):
                    block = self._raw(r0, min(h, r0 + band_rows), c0, min(w, c0 + 4 * band_rows))
                    samples.append(block[(-r0) % step::step, (-c0) % step::step].ravel())
            lo, hi = np.percentile(np.concatenate(samples), EM_PERCENTILES)
            return (float(lo) + float(hi)) / 2, max((float(hi) - float(lo)) / 4, 1e-6)
        return self._zscore_statistics(band_rows)

    # -- z-score statistics exactly as numpy computes them on the whole work image --------
    def _rows(self, r0: int, r1: int, band_rows: int) -> np.ndarray:
        """Prepared work rows ``r0:r1`` (all columns), computed in blocks of columns."""
        w = self.shape[1]
        out = np.empty((r1 - r0, w), np.float32)
        for c0 in range(0, w, 4 * band_rows):
            c1 = min(w, c0 + 4 * band_rows)
            out[:, c0:c1] = self._raw(r0, r1, c0, c1)
        return out

    def _zscore_statistics(self, band_rows: int) -> tuple[float, float]:
        """``work.mean()`` and ``work.std()`` of :func:`em2fm.tiles.prepare_em`, bit for bit.

        numpy sums float32 pairwise (blocks of 8, halves rounded down to multiples of 8)
        over the flattened array when it is contiguous; a column-cropped view it sums in
        buffered chunks of whole rows (``numpy.getbufsize()`` elements; each chunk
        pairwise, chunks added in order). The same tree is walked here,
        its leaves (at most ``LEAF`` px, consecutive) computed band by band: two streaming
        passes (sum; squared deviations from the float32 mean) instead of one, so that the
        work grid equals the in-memory one exactly.
        """
        h, w = self.shape
        n = h * w
        full_w = int(self.reader.shape[1] // self.factor)  # smooth_resample's width
        cache: dict = {}

        def flat(start: int, count: int, dev: np.float32 | None) -> np.ndarray:
            r0, r1 = start // w, (start + count - 1) // w + 1
            if cache.get("rows") != (r0, r1):
                cache["rows"], cache["data"] = (r0, r1), self._rows(r0, r1, band_rows).ravel()
            data = cache["data"][start - r0 * w: start - r0 * w + count]
            if dev is not None:
                data = np.square(np.subtract(data, dev))
            return data

        leaf = max(128, min(LEAF, band_rows * w))  # about band_rows rows per leaf

        def pairwise(start: int, count: int, dev: np.float32 | None) -> np.float32:
            if count <= leaf:
                return np.add.reduce(flat(start, count, dev))
            half = count // 2
            half -= half % 8
            return np.float32(pairwise(start, half, dev) + pairwise(start + half, count - half,
                                                                     dev))

        if full_w == w:  # prepare_em's work image is contiguous: one pairwise tree
            total = pairwise(0, n, None)
        else:  # a column-cropped view: numpy's buffered reduction, chunks of whole rows
            chunk = max(1, np.getbufsize() // w)  # (8192 elements) each summed pairwise
            step = max(chunk, band_rows // chunk * chunk)
            total = np.float32(0.0)
            for r0 in range(0, h, step):
                rows = self._rows(r0, min(h, r0 + step), band_rows)
                for k in range(0, len(rows), chunk):
                    total = np.float32(total + np.add.reduce(rows[k:k + chunk].ravel()))
        mean = np.float32(np.float64(total) / n)
        cache.clear()
        var = np.float32(np.float64(pairwise(0, n, mean)) / n)  # x - mean: a new, contiguous array
        return float(mean), float(np.sqrt(var))

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Rows ``r0:r1``, columns ``c0:c1`` (work px), z-scored, reflected beyond the image."""
        h, w = self.shape
        ri = reflect_index(np.arange(r0, r1), h)
        ci = reflect_index(np.arange(c0, c1), w)
        a, b, c, d = int(ri.min()), int(ri.max()) + 1, int(ci.min()), int(ci.max()) + 1
        region = self._raw(a, b, c, d)
        if (a, b, c, d) != (r0, r1, c0, c1):
            region = region[(ri - a)[:, None], (ci - c)[None, :]]
        return (region - np.float32(self.mean)) / np.float32(max(self.std, 1e-6))
