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


# ------------------------------------------------------------------ roles, sheet, safe names
from em2fm.sections import read_sheet, safe_name, safe_names  # noqa: E402


def _exports(root, names_fm: dict[str, bool]):
    from conftest import make_section

    for k, (name, fm) in enumerate(names_fm.items(), 1):
        make_section(root / name, k, with_fm=fm)


def test_safe_names():
    assert safe_name("S001") == "S001"
    assert safe_name("<b>x<b>") == "b_x_b"
    assert safe_name("a b/../c") == "a_b_.._c"
    assert safe_name("..") == "section"
    assert safe_name("-rf") == "rf"
    with pytest.raises(ConfigError, match=r"both map to the safe name 'a_b'.*rename"):
        safe_names(["a b", "a_b"])


def test_one_section_plans_and_only_training_raises(tmp_path):
    _exports(tmp_path, {"S1": True})
    p = plan({"raw_dir": str(tmp_path), "split": {}})
    assert p.sections == ["S1"] and p.split == {"S1": "test"}
    assert "cannot be split" in p.split_error
    with pytest.raises(ConfigError, match="cannot be split"):
        p.require_training()


def test_section_without_fm_is_predict(tmp_path):
    _exports(tmp_path, {"S1": True, "S2": True, "S3": True, "S4": False})
    p = plan({"raw_dir": str(tmp_path), "split": {}})
    assert p.split == {"S1": "train", "S2": "val", "S3": "test", "S4": "predict"}
    assert p.with_fm == ["S1", "S2", "S3"] and p.em_only == ["S4"]
    assert p.split_error is None
    p.require_training()


def test_model_given_makes_every_fm_section_test(tmp_path):
    _exports(tmp_path, {"S1": True, "S2": False})
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    p = plan({"raw_dir": str(tmp_path), "split": {}, "model": {"path": str(model)}})
    assert p.split == {"S1": "test", "S2": "predict"} and p.model == str(model)
    with pytest.raises(ConfigError, match="nothing is trained"):
        p.require_training()
    with pytest.raises(ConfigError, match="not a file"):
        plan({"raw_dir": str(tmp_path), "split": {}, "model": {"path": str(tmp_path / "no")}})


def test_sheet_gives_roles_and_streams(tmp_path):
    raw = tmp_path / "raw"
    _exports(raw, {"A": True, "B": True, "C": True, "D 1": True})
    sheet = tmp_path / "sections.tsv"
    sheet.write_text("# comment\nsection\trole\tem_stream\nA\ttrain\t\nB\tval\tBSE\n"
                     "D 1\tpredict\t\n")
    p = plan({"raw_dir": str(raw), "split": {}, "section_sheet": str(sheet),
              "ingest": {"em_stream": None}})
    assert p.sections == ["A", "B", "D_1"]  # C is not in the sheet; "D 1" gets a safe name
    assert p.split == {"A": "train", "B": "val", "D_1": "predict"}
    assert p.folder("D_1") == "D 1" and p.em_streams == {"A": None, "B": "BSE", "D_1": None}
    assert p.split_error is None


@pytest.mark.parametrize(("text", "match"), [
    ("section\tsplit\nA\ttrain\n", "lacks \\['role'\\]"),
    ("section\trole\nA\ttraining\n", "line 2: role 'training'"),
    ("section\trole\nA\ttrain\nA\ttest\n", "line 3: section 'A' is listed twice"),
    ("section\trole\nZ\ttrain\n", "line 2: section 'Z' is not a section folder"),
    ("section\trole\n", "lists no section"),
])
def test_sheet_errors_name_the_line_and_the_fix(tmp_path, text, match):
    sheet = tmp_path / "s.tsv"
    sheet.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        read_sheet(sheet, ["A", "B"])
    assert "Fix:" in str(err.value) and str(sheet) in str(err.value)


def test_sheet_without_train_role_is_an_error_only_for_training(tmp_path):
    raw = tmp_path / "raw"
    _exports(raw, {"A": True})
    sheet = tmp_path / "s.tsv"
    sheet.write_text("section\trole\nA\ttest\n")
    p = plan({"raw_dir": str(raw), "split": {}, "section_sheet": str(sheet)})
    with pytest.raises(ConfigError, match="no section the role train"):
        p.require_training()


def test_path_variables_in_folder_names_are_rejected(tmp_path):
    _exports(tmp_path, {"<b>x<b>": True, "S2": True, "S3": True})
    with pytest.raises(ConfigError, match=r"section folder '<b>x<b>'.*e\.g\. to 'b_x_b'"):
        plan({"raw_dir": str(tmp_path), "split": {}})
