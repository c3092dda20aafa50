import os
import stat

import numpy as np
import pytest

from em2fm import io


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_path_keeps_the_old_file_until_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError
    assert target.read_text() == "old"
    io.write_text(target, "new")
    assert target.read_text() == "new"


def test_outputs_get_the_usual_permissions(tmp_path):
    io.write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


def test_json_round_trip_with_numpy(tmp_path):
    io.write_json(tmp_path / "a.json", {"m": np.eye(3), "x": np.float32(1.5), "n": float("nan")})
    data = io.read_json(tmp_path / "a.json")
    assert data == {"m": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "x": 1.5, "n": None}


def test_npz_round_trip(tmp_path):
    io.save_npz(tmp_path / "a.npz", a=np.arange(3), b=np.ones((2, 2), bool))
    d = io.load_npz(tmp_path / "a.npz")
    assert d["a"].tolist() == [0, 1, 2] and d["b"].dtype == bool


def test_band_written_npz_equals_save_npz(tmp_path):
    """The streaming writer makes the file numpy.savez makes (but for zip timestamps)."""
    import zipfile

    from em2fm.lazy import open_array

    rng = np.random.default_rng(0)
    em = rng.integers(0, 60000, (301, 77)).astype(np.uint16)
    fm = rng.normal(size=(2, 5, 6)).astype(np.float32)
    io.save_npz(tmp_path / "a.npz", em=em, fm=fm)
    with io.npz_writer(tmp_path / "b.npz") as w:
        with w.member("em", em.shape, em.dtype) as write:
            for r0 in range(0, em.shape[0], 64):
                write(em[r0:r0 + 64])
        w.add("fm", fm)
    a, b = io.load_npz(tmp_path / "a.npz"), io.load_npz(tmp_path / "b.npz")
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(a[k], b[k])
    with zipfile.ZipFile(tmp_path / "a.npz") as za, zipfile.ZipFile(tmp_path / "b.npz") as zb:
        for ia, ib in zip(za.infolist(), zb.infolist(), strict=True):
            assert (ia.filename, ia.header_offset, ia.file_size, ia.CRC, ia.compress_type) == (
                ib.filename, ib.header_offset, ib.file_size, ib.CRC, ib.compress_type)
    np.testing.assert_array_equal(open_array(tmp_path / "b.npz", "em").read(3, 9, 4, 70),
                                  em[3:9, 4:70])


def test_band_written_npz_is_all_or_nothing(tmp_path):
    with (pytest.raises(ValueError, match="2 of 4 rows"),
          io.npz_writer(tmp_path / "c.npz") as w, w.member("em", (4, 3), np.uint16) as write):
        write(np.zeros((2, 3)))
    assert not (tmp_path / "c.npz").exists() and list(tmp_path.iterdir()) == []
