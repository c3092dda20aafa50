"""End-to-end runs through the snakemake CLI on tiny simulated data."""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from snakemake_cli import TINY, snakemake

from em2fm.evaluate import read_tsv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    snakemake(work, "results/report.html", "results/share.zip")
    return work


def test_default_chain_on_simulated_data(tiny_run):
    res = tiny_run / "results"
    assert (res / "report.html").stat().st_size > 10_000
    rows = read_tsv(res / "metrics.tsv")
    assert {(r["section"], r["channel"]) for r in rows} == {
        (s, c) for s in ("S001", "S002", "S003") for c in ("Hoechst", "Insulin")}
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for r in rows:
        assert r["registration_error_nm"] < r["metadata_error_nm"]
        assert 0 < r["noise_ceiling_pcc"] <= 1
        assert r["registration_status"] in ("ok", "low_confidence", "failed")
    # every section went through round 0 (multimodal) and one prediction-driven round
    rounds = read_tsv(res / "registration_rounds.tsv")
    assert [(r["section"], r["round"]) for r in rounds] == [
        (s, k) for s in ("S001", "S002", "S003") for k in (-1.0, 0.0, 1.0)]
    assert (res / "registration" / "round0" / "model" / "model.pt").exists()
    # every rule logged and was benchmarked; truth stays apart from the exports
    for rule in ("simulate", "ingest", "register/round0", "register/round1", "register/final",
                 "tiles", "predict"):
        assert len(list((res / "logs" / rule).glob("*.log"))) == 3
        assert len(list((res / "benchmarks" / rule).glob("*.tsv"))) == 3
    for name in ("train", "evaluate", "report", "share"):
        assert (res / "logs" / f"{name}.log").exists()
        assert (res / "benchmarks" / f"{name}.tsv").exists()
    exported = [p.name for p in (res / "simulate" / "exports").rglob("*")
                if p.is_file() and not p.name.startswith(".")]
    assert sorted(exported) == ["S001.ome.tiff", "S002.ome.tiff", "S003.ome.tiff"]


def test_rerun_one_stage_gives_the_same_metrics(tiny_run):
    before = (tiny_run / "results" / "metrics.tsv").read_text()
    model = tiny_run / "results" / "model" / "model.pt"
    trained = model.stat().st_mtime_ns
    ingested = (tiny_run / "results" / "ingest" / "S001.json").stat().st_mtime_ns
    snakemake(tiny_run, "results/report.html", "--forcerun", "train")
    assert model.stat().st_mtime_ns > trained  # retrained …
    assert (tiny_run / "results" / "ingest" / "S001.json").stat().st_mtime_ns == ingested
    assert (tiny_run / "results" / "metrics.tsv").read_text() == before  # same seed, same run
    r = snakemake(tiny_run, "results/report.html", "--dry-run")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_report_size_and_provenance(tiny_run):
    html = (tiny_run / "results" / "report.html").read_text()
    size = len(html.encode())
    print(f"report.html: {size / 1e6:.2f} MB for 3 sections")
    assert size < 3e6
    # one test section in full, every section as a thumbnail and registration QC
    alts = re.findall(r'<img alt="([^"]*)"', html)
    assert {"S003 overview", "S003 zooms", "thumbnails", "histograms"} <= set(alts)
    assert "S001 overview" not in alts
    # wall time and peak memory of every step, from its benchmark files
    for step in ("simulate", "ingest", "register/round0", "register/round1", "train/round0",
                 "tiles", "train", "predict", "evaluate", "all steps", "peak memory (MB)"):
        assert f'<td class="l">{step}</td>' in html or f">{step}<" in html, step
    assert "git commit" in html and "Input exports with their SHA-256" in html


def test_report_in_headless_chromium(tiny_run, tmp_path):
    """The report as a user sees it: every image loads, no request, no console error."""
    from chromium_check import browser_check

    html = tiny_run / "results" / "report.html"
    r = browser_check(html, tmp_path, html.read_text().count("<img "))
    print(r.summary())


def test_snakemake_report(tiny_run):
    """Snakemake's own report of the outputs marked with report(), beside ours."""
    snakemake(tiny_run, "--report", "results/provenance.zip")
    path = tiny_run / "results" / "provenance.zip"
    assert path.stat().st_size > 10_000
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith("/report.html") for n in names)
    for output in ("metrics.tsv", "registration_rounds.tsv", "training.tsv", "S001.png"):
        assert any(n.endswith(output) for n in names), (output, names)
    assert (tiny_run / "results" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_share_bundle(tiny_run):
    # a rerun of one stage (above) left the bundle behind the report: asking for it updates it
    snakemake(tiny_run, "results/share.zip")
    path = tiny_run / "results" / "share.zip"
    z = zipfile.ZipFile(path)
    names = sorted(n.removeprefix("em2fm-share/") for n in z.namelist())
    top = sorted({n.split("/")[0] for n in names})
    print(f"share.zip: {path.stat().st_size / 1e6:.2f} MB, {len(names)} files; top level: "
          + ", ".join(top))
    for name in ("README.md", "report.html", "metrics.tsv", "registration_rounds.tsv",
                 "model/model.pt", "model/training.tsv", "config.yaml", "inputs.sha256",
                 "provenance.json", "envs/train.yaml", "workflow/Snakefile"):
        assert name in names, name
    assert z.read("em2fm-share/report.html") == (tiny_run / "results" / "report.html"
                                                 ).read_bytes()
    # the checksums verify from the run folder, as the README says (sha256sum -c)
    lines = z.read("em2fm-share/inputs.sha256").decode().splitlines()
    assert len(lines) == 3
    for line in lines:
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256((tiny_run / rel).read_bytes()).hexdigest() == digest


def test_user_exports_with_another_channel_set(tiny_run, tmp_path):
    raw = tmp_path / "exports"
    shutil.copytree(tiny_run / "results" / "simulate" / "exports", raw)
    work = tmp_path / "work"
    snakemake(work, "results/report.html", "--config", f"raw_dir={raw}", "channels=[Hoechst]")
    rows = read_tsv(work / "results" / "metrics.tsv")
    assert [r["channel"] for r in rows] == ["Hoechst"] * 3
    assert all(r["noise_ceiling_pcc"] != r["noise_ceiling_pcc"] for r in rows)  # no truth: NaN
    assert not (work / "results" / "simulate").exists()  # nothing simulated
    # the user's files are untouched
    for a in raw.rglob("*.ome.tiff"):
        b = tiny_run / "results" / "simulate" / "exports" / a.relative_to(raw)
        assert a.read_bytes() == b.read_bytes()


def test_one_target_runs_only_its_upstream(tiny_run, tmp_path):
    raw = tmp_path / "exports"
    shutil.copytree(tiny_run / "results" / "simulate" / "exports", raw)
    snakemake(tmp_path, "results/registration/S002.json", "--config", f"raw_dir={raw}")
    made = {p.relative_to(tmp_path / "results").parts[0] for p in
            (tmp_path / "results").rglob("*") if p.is_file()}
    assert made == {"ingest", "registration", "logs", "benchmarks"}


def test_prediction_driven_round_repairs_a_poor_multimodal_registration(tiny_run, tmp_path):
    """A deliberately crippled multimodal search (1 µm grid, one start, one iteration)
    leaves the FM off; the prediction-driven round brings it back."""
    raw = tmp_path / "exports"
    shutil.copytree(tiny_run / "results" / "simulate" / "exports", raw)
    truth = tiny_run / "results" / "simulate" / "truth"
    work = tmp_path / "work"
    snakemake(work, "results/registration/S001.json", "results/registration/S002.json",
              "results/registration/S003.json", "--config", f"raw_dir={raw}",
              "register={search_step_um: 1.0, starts: 1, iterations: 1, "
              "agreement_tolerance_fm_px: 10}")
    from em2fm.evaluate import registration_rounds

    rows = registration_rounds(["S001", "S002", "S003"], work / "results" / "ingest",
                               work / "results" / "registration", truth)
    by = {(r["section"], r["round"]): r for r in rows}
    before = {s: by[(s, 0)]["error_fm_px"] for s in ("S001", "S002", "S003")}
    after = {s: by[(s, 1)]["error_fm_px"] for s in ("S001", "S002", "S003")}
    assert max(before.values()) > 1.5, before  # the crippled search left the FM off
    for s in before:  # measured: 1.8, 3.6, 6.2 (failed: metadata) -> 0.4, 0.6, 0.4 FM px
        assert after[s] < 0.75, (s, before, after)
        if before[s] > 1:
            assert after[s] < before[s] / 2, (s, before, after)


def test_missing_metadata_stops_at_ingest(tiny_run, tmp_path):
    from em2fm.odemis import read_file, write_file

    raw = tmp_path / "exports"
    shutil.copytree(tiny_run / "results" / "simulate" / "exports", raw)
    bad = raw / "S002" / "S002.ome.tiff"
    images = read_file(bad).images
    images[0].pixel_size_m = None  # the FM lost its pixel size
    bad.unlink()
    write_file(bad, images)
    work = tmp_path / "work"
    r = snakemake(work, "results/report.html", "--config", f"raw_dir={raw}", check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Error in rule ingest" in out
    assert f"{bad}: the FM image" in out and "no pixel size" in out and "Fix:" in out
    assert not (work / "results" / "ingest" / "S002.json").exists()  # no partial output
    assert not (work / "results" / "model").exists()


def test_a_montage_section_through_the_whole_chain(tiny_run, tmp_path):
    """S003 exported as an array-tomography montage (EM-grid/ tiles with stage errors):
    ingest stitches it, and it goes through registration, training, prediction, evaluation
    and the report like the others."""
    import yaml

    from em2fm import io
    from em2fm.simulate import run as simulate

    raw = tmp_path / "exports"
    shutil.copytree(tiny_run / "results" / "simulate" / "exports", raw)
    shutil.rmtree(raw / "S003")
    tiny = yaml.safe_load(TINY.read_text())
    simulate("S003", 2, tiny["seed"], tiny["simulate"]["params"], "tiled", raw / "S003",
             tmp_path / "t.json", tmp_path / "t.npz",
             montage={"tiles": 2, "overlap": 0.15, "jitter_px": 3, "stage_error_nm": 40})
    truth = tiny_run / "results" / "simulate" / "truth"
    work = tmp_path / "work"
    snakemake(work, "results/report.html", "--config", f"raw_dir={raw}", f"truth_dir={truth}")
    meta = io.read_json(work / "results" / "ingest" / "S003.json")
    assert meta["montage"]["n_tiles"] == 4 and meta["montage"]["max_residual_px"] < 1.0
    assert meta["em"]["shape"] == io.read_json(tiny_run / "results" / "ingest" / "S003.json")[
        "em"]["shape"]
    rows = [r for r in read_tsv(work / "results" / "metrics.tsv") if r["section"] == "S003"]
    assert len(rows) == 2 and all(r["registration_error_nm"] < r["metadata_error_nm"]
                                  for r in rows)
    assert "SEM montages" in (work / "results" / "report.html").read_text()
