import hashlib
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from em2fm import io, share

ROOT = Path(__file__).resolve().parents[1]


def _bundle(mini_run, tmp_path, **kw):
    root = mini_run["root"]
    s = mini_run["sections"]
    html = tmp_path / "report.html"
    html.write_text("<html>report</html>")
    names = share.build(
        tmp_path / "share.zip", report_html=html,
        metrics_tsv=kw.pop("metrics_tsv", root / "metrics.tsv"),
        rounds_tsv=kw.pop("rounds_tsv", root / "registration_rounds.tsv"),
        model=root / "model" / "model.pt",
        training_tsv=kw.pop("training_tsv", root / "model" / "training.tsv"),
        ingest_json=kw.pop("ingest_json", [root / "ingest" / f"{x}.json" for x in s]),
        config={"seed": 7, "channels": ["Hoechst"], "raw_dir": None}, workflow_dir=ROOT,
        sections=s, **kw)
    return names, zipfile.ZipFile(tmp_path / "share.zip")


def test_bundle_holds_what_a_colleague_needs(mini_run, tmp_path):
    card = tmp_path / "model.json"
    card.write_text('{"intended_use": "test"}')
    names, z = _bundle(mini_run, tmp_path, model_card=card)
    inside = {n.removeprefix("em2fm-share/") for n in z.namelist()}
    assert inside == set(names)
    for name in ("README.md", "report.html", "metrics.tsv", "registration_rounds.tsv",
                 "model/model.pt", "model/model.json", "model/training.tsv", "config.yaml",
                 "envs/report.yaml", "envs/share.yaml", "inputs.sha256", "provenance.json",
                 "workflow/Snakefile", "workflow/rules/share.smk", "workflow/src/em2fm/share.py",
                 "workflow/schemas/config.schema.yaml"):
        assert name in inside, name
    assert not any("__pycache__" in n or n.startswith("workflow/tests") for n in inside)
    assert yaml.safe_load(z.read("em2fm-share/config.yaml"))["seed"] == 7
    readme = z.read("em2fm-share/README.md").decode()
    prov = json.loads(z.read("em2fm-share/provenance.json"))
    assert prov["git commit"] in readme and "sha256sum -c inputs.sha256" in readme
    assert "snakemake" in readme and "model card" in readme
    # the checksums are those of the exports, in sha256sum's format
    lines = z.read("em2fm-share/inputs.sha256").decode().splitlines()
    assert len(lines) == 3
    for line in lines:
        digest, path = line.split("  ", 1)
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert z.read("em2fm-share/model/model.pt") == (
        mini_run["root"] / "model" / "model.pt").read_bytes()


def test_without_model_card(mini_run, tmp_path):
    names, _ = _bundle(mini_run, tmp_path)
    assert "model/model.json" not in names


def test_missing_export_is_one_clear_error_and_no_zip(mini_run, tmp_path):
    ing = io.read_json(mini_run["root"] / "ingest" / "S1.json")
    bad = tmp_path / "S1.json"
    io.write_json(bad, {**ing, "files": [str(tmp_path / "gone.ome.tiff")]})
    with pytest.raises(FileNotFoundError, match=r"gone\.ome\.tiff.*missing.*Fix:"):
        _bundle(mini_run, tmp_path, ingest_json=[bad])
    assert not (tmp_path / "share.zip").exists()


def test_bundle_of_a_given_model_and_em_only_sections(mini_run, tmp_path):
    """model=PATH: no training log or card of this run; no FM section: no metrics."""
    names, _ = _bundle(mini_run, tmp_path, metrics_tsv=None, rounds_tsv=None,
                       training_tsv=None)
    assert "model/model.pt" in names and "report.html" in names
    for absent in ("metrics.tsv", "registration_rounds.tsv", "model/training.tsv",
                   "model/model.json"):
        assert absent not in names, absent
