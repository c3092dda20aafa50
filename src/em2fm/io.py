"""Small I/O helpers: outputs appear whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched,
    so no partial output is ever visible under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (numpy values converted), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_to_jsonable(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays to an uncompressed ``.npz`` file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


class NpzWriter:
    """An uncompressed ``.npz`` written member by member, a large member band by band.

    The file is the one :func:`save_npz` writes (``numpy.savez``: ZIP_STORED members
    ``name.npy``, zip64 forced), so :func:`load_npz`, ``numpy.load`` and
    :func:`em2fm.lazy.open_array` read it alike; only one band of a member is ever in
    memory. Use :func:`npz_writer`, which makes the file appear whole or not at all.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED,
                                    allowZip64=True)

    def add(self, name: str, array: np.ndarray) -> None:
        """Member ``name`` from a whole (small) array."""
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as fid:
            np.lib.format.write_array(fid, np.asanyarray(array), allow_pickle=False)

    @contextlib.contextmanager
    def member(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str
               ) -> Iterator[Any]:
        """Member ``name`` of ``shape`` and ``dtype`` (C order), written in blocks.

        Yields a function ``write(block)`` taking consecutive blocks of whole rows
        (first axis) in order; all rows must be written before the block closes.
        """
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": tuple(int(n) for n in shape)}
        row_shape = header["shape"][1:]
        written = [0]
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as fid:
            try:
                np.lib.format.write_array_header_1_0(fid, header)
            except ValueError:  # header too large for version 1.0 (as numpy does)
                np.lib.format.write_array_header_2_0(fid, header)

            def write(block: np.ndarray) -> None:
                block = np.asarray(block)
                if block.shape[1:] != row_shape:
                    raise ValueError(f"{self.path}: block {block.shape} does not fit the "
                                     f"rows of {name!r} {header['shape']}")
                if written[0] + block.shape[0] > header["shape"][0]:
                    raise ValueError(f"{self.path}: more rows than {name!r} has")
                fid.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
                written[0] += block.shape[0]

            yield write
            if written[0] != header["shape"][0]:
                raise ValueError(f"{self.path}: {written[0]} of {header['shape'][0]} rows of "
                                 f"{name!r} written")

    def close(self) -> None:
        """Write the zip directory."""
        self._zip.close()


@contextlib.contextmanager
def npz_writer(path: str | os.PathLike) -> Iterator[NpzWriter]:
    """An :class:`NpzWriter` on a temporary file renamed to ``path`` on success (atomic)."""
    with atomic_path(path) as tmp:
        writer = NpzWriter(tmp)
        try:
            yield writer
        finally:
            writer.close()


def load_npz(path: str | os.PathLike, keys: tuple[str, ...] | None = None
             ) -> dict[str, np.ndarray]:
    """Load every array (or only ``keys``) of an ``.npz`` file into memory."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files if keys is None or k in keys}


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
