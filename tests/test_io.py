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
