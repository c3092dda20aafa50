import pytest

from em2fm.sections import ConfigError, discover_sections, natural_key, plan, split_sections


def test_natural_order():
    assert sorted(["S10", "S2", "S1"], key=natural_key) == ["S1", "S2", "S10"]


def test_default_split_takes_contiguous_blocks_at_the_end():
    s = [f"S{i}" for i in range(1, 7)]
    split = split_sections(s, 0.2, 0.2)
    assert [split[x] for x in s] == ["train"] * 4 + ["val", "test"]
    split = split_sections([f"S{i}" for i in range(1, 11)], 0.2, 0.2)
    assert [k for k, v in split.items() if v == "test"] == ["S9", "S10"]
    assert [k for k, v in split.items() if v == "val"] == ["S7", "S8"]


def test_explicit_split_wins():
    split = split_sections(["a", "b", "c", "d"], val=["a"], test=["b"])
    assert split == {"a": "val", "b": "test", "c": "train", "d": "train"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"val": ["zz"]}, "unknown section"), ({"val": ["a"], "test": ["a"]}, "both"),
     ({"val": ["a", "b"], "test": ["c"]}, "no training")],
)
def test_bad_splits(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        split_sections(["a", "b", "c"], **kwargs)


def test_too_few_sections():
    with pytest.raises(ConfigError, match="cannot be split"):
        split_sections(["a", "b"], 0.2, 0.2)


def test_discover(tmp_path):
    for name in ("S2", "S10", "empty", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "S2" / "a.ome.tiff").write_bytes(b"")
    (tmp_path / "S10" / "sub").mkdir()
    (tmp_path / "S10" / "sub" / "b.OME.TIF").write_bytes(b"")
    (tmp_path / ".hidden" / "c.ome.tiff").write_bytes(b"")
    assert discover_sections(tmp_path) == ["S2", "S10"]


def test_discover_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        discover_sections(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no section folder"):
        discover_sections(tmp_path)


def test_plan_simulated_and_real(tmp_path):
    cfg = {"raw_dir": None, "simulate": {"n_sections": 4}, "split": {}}
    p = plan(cfg)
    assert p.simulated and p.sections == ["S001", "S002", "S003", "S004"]
    assert p.truth_dir == "results/simulate/truth"
    assert p.in_split("test") == ["S004"]
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.ome.tiff").write_bytes(b"")
    p = plan({"raw_dir": str(tmp_path), "split": {}, "sections": ["a", "b", "c"]})
    assert not p.simulated and p.truth_dir is None and p.raw_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        plan({"raw_dir": str(tmp_path), "split": {}, "sections": ["q"]})
