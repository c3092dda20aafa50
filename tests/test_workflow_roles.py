"""End-to-end runs through the snakemake CLI on tiny exports (tests/conftest.py make_section):
one section, an EM-only section, a trained model applied to data with another FM pixel size,
unsafe section names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import make_section
from snakemake_cli import snakemake

from em2fm import io
from em2fm.evaluate import read_tsv
from em2fm.odemis import read_file

pytestmark = pytest.mark.slow


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: rule → number of jobs."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def exports(root: Path, sections: dict[str, bool], fm_pixel_m: float = 100e-9,
            first: int = 1) -> Path:
    """Tiny exports: section name → with FM (True) or EM only (False)."""
    for k, (name, fm) in enumerate(sections.items(), first):
        make_section(root / name, k, fm_pixel_m=fm_pixel_m, with_fm=fm)
    return root


def test_one_section_is_ingested_and_registered_without_a_split(tmp_path):
    raw = exports(tmp_path / "raw", {"S1": True})
    work = tmp_path / "work"
    snakemake(work, "results/ingest/S1.json", "results/registration/S1.json", "--config",
              f"raw_dir={raw}", "channels=[Hoechst]")
    reg = io.read_json(work / "results" / "registration" / "S1.json")
    assert [r["round"] for r in reg["rounds"]] == [0]  # nothing to train a round's model on
    r = snakemake(work, "results/report.html", "--dry-run", "--config", f"raw_dir={raw}",
                  "channels=[Hoechst]", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "1 section(s) cannot be split into train/val/test" in out and "Fix:" in out


@pytest.fixture(scope="module")
def em_only_run(tmp_path_factory) -> dict:
    """Three sections with FM and one EM-only section (S4), run to the report."""
    root = tmp_path_factory.mktemp("emonly")
    raw = exports(root / "raw", {"S1": True, "S2": True, "S3": True, "S4": False})
    work = root / "work"
    snakemake(work, "results/report.html", "--config", f"raw_dir={raw}", "channels=[Hoechst]")
    return {"root": root, "raw": raw, "work": work}


def test_em_only_section_is_predicted_and_reported(em_only_run):
    res = em_only_run["work"] / "results"
    assert io.read_json(res / "ingest" / "S4.json")["fm"] is None
    assert io.read_json(res / "ingest" / "S4.json")["role"] == "predict"
    pred = read_file(res / "predictions" / "S4.ome.tif").images[0]
    assert [c.name for c in pred.channels] == ["Hoechst"] and pred.centre_m is not None
    assert {r["section"] for r in read_tsv(res / "metrics.tsv")} == {"S1", "S2", "S3"}
    assert not (res / "registration" / "S4.json").exists()
    assert not (res / "tiles" / "S4.npz").exists()
    html = (res / "report.html").read_text()
    assert "EM-only sections (predicted, not evaluated)" in html
    assert "S4 (EM only)" in html
    assert "trained in this run" in html


def test_model_applied_to_data_with_another_fm_pixel_size(em_only_run, tmp_path):
    model = em_only_run["work"] / "results" / "model" / "model.pt"
    raw = exports(tmp_path / "raw2", {"T1": True, "T2": True, "T3": False}, fm_pixel_m=80e-9,
                  first=5)
    work = tmp_path / "work"
    args = ("results/report.html", "--config", f"raw_dir={raw}", f"model={model}")
    dry = snakemake(work, *args, "--dry-run")
    jobs = job_counts(dry.stdout + dry.stderr)
    print("job list of the model-applied run:", jobs)
    assert "train" not in jobs and "train_round" not in jobs and "tiles_round" not in jobs
    assert jobs["predict"] == 3 and jobs["ingest"] == 3
    assert jobs["register"] == 2 and jobs["register_refine"] == 2  # one round, given model
    snakemake(work, *args)
    res = work / "results"
    assert io.read_json(res / "ingest" / "T1.json")["fm"]["pixel_size_m"][0] == (
        pytest.approx(80e-9))
    for s in ("T1", "T2", "T3"):
        pred = read_file(res / "predictions" / f"{s}.ome.tif").images[0]
        assert pred.pixel_size_m[0] == pytest.approx(100e-9)  # the model's, not the FM's
    rows = read_tsv(res / "metrics.tsv")
    assert {r["section"] for r in rows} == {"T1", "T2"} and {r["split"] for r in rows} == {
        "test"}
    assert all(r["pcc"] > 0.3 for r in rows), rows
    assert not (res / "model").exists()
    from em2fm.pretrained import file_sha256

    html = (res / "report.html").read_text()
    assert file_sha256(model) in html and "given with <code>model=</code>" in html
    assert "T3 (EM only)" in html


def test_unsafe_section_names_are_mapped_or_rejected(tmp_path):
    raw = exports(tmp_path / "raw", {"S 1": True, "(b)x&b;": True, "-rf": False})
    work = tmp_path / "work"
    snakemake(work, "results/ingest/S_1.json", "results/ingest/b_x_b.json",
              "results/ingest/rf.json", "--config", f"raw_dir={raw}", "channels=[Hoechst]")
    assert io.read_json(work / "results" / "ingest" / "b_x_b.json")["name"] == "(b)x&b;"
    assert io.read_json(work / "results" / "ingest" / "rf.json")["name"] == "-rf"
    made = sorted(p.relative_to(work).as_posix() for p in work.rglob("*")
                  if p.is_file() and ".snakemake" not in p.parts)
    assert all(p.startswith("results/") for p in made), made
    assert not any("<" in p or " " in p for p in made), made
    bad = exports(tmp_path / "raw2", {"a b": True, "a_b": True})
    r = snakemake(work, "results/ingest/a_b.json", "--config", f"raw_dir={bad}",
                  "channels=[Hoechst]", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "section folders 'a b' and 'a_b' both map to the safe name 'a_b'" in out
    assert "Fix: rename one of the folders" in out
    # '<b>' in a path is a Snakemake path variable: rejected at start, with the fix
    tag = exports(tmp_path / "raw3", {"<b>x<b>": True})
    r = snakemake(work, "results/ingest/b_x_b.json", "--config", f"raw_dir={tag}",
                  "channels=[Hoechst]", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out
    assert "section folder '<b>x<b>'" in out and "Fix: rename the folder, e.g. to 'b_x_b'" in out
