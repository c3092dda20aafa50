"""Every command in the README's code blocks works as written.

The commands are read from the README's ```bash blocks. Each ``snakemake`` command runs as
a dry run (``--dry-run`` inserted after ``snakemake``, before ``--config``; ingest targets,
which are quick, for real) in a checkout
of the workflow, with the example paths replaced by tiny test exports (tests/conftest.py
make_section) and a small checkpoint; the ```tsv block is the section sheet. Installation
steps (venv, pip) are checked for their requirement files; the test suite command is this
run. A command the test does not know fails it: teach the test, so README and behaviour
cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_section

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
pytestmark = pytest.mark.slow

#: Example paths of the README → what the test puts there.
PLACEHOLDERS = ("/path/to/new_exports", "/path/to/exports", "/path/to/model.pt",
                "config/sections.tsv")


def code_blocks(text: str, language: str) -> list[str]:
    """Bodies of the fenced code blocks of one language."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def commands(text: str) -> list[str]:
    """Shell commands of the ```bash blocks (comments and blank lines dropped)."""
    out = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_readme_has_the_commands_the_issue_asks_for():
    cmds = commands(README.read_text())
    text = "\n".join(cmds)
    for what in ("raw_dir=/path/to/exports", "section_sheet=config/sections.tsv",
                 "model=/path/to/model.pt", "results/ingest/S1.json",
                 "results/predictions/S4.ome.tif"):
        assert what in text, what
    assert len(code_blocks(README.read_text(), "tsv")) == 1


def _checkpoint(path: Path) -> None:
    """A small checkpoint with the keys prediction needs (random weights)."""
    import torch

    from em2fm.unet import UNetConfig, build

    cfg = UNetConfig(out_channels=1, em_scale=4, base_channels=4, max_channels=16, depth=3)
    model = build(cfg)
    torch.save({"model": cfg.as_dict(), "state_dict": model.state_dict(),
                "channels": [{"name": "Hoechst", "excitation_nm": 405.0, "emission_nm": 450.0}],
                "target_mean": [100.0], "target_std": [50.0], "target_pixel_size_m": 100e-9,
                "margin": 4, "tile_size": 16, "train_sections": ["A1", "A2"],
                "val_sections": ["A3"], "step": 40, "val_pcc_mean": 0.5}, path)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> dict:
    """The workflow's files linked into a fresh folder, and the README's example data."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "checkout"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".snakemake", ".tmp", ".cache", "results", ".venv"}:
            (work / entry.name).symlink_to(entry)
    exports = root / "exports"
    for k, name in enumerate(("S1", "S2", "S3", "S4"), 1):
        make_section(exports / name, k, with_fm=name != "S4", insulin=True)
    new = root / "new_exports"
    for k, name in enumerate(("S1", "S2", "S4"), 11):
        make_section(new / name, k, fm_pixel_m=80e-9, with_fm=name != "S4", insulin=True)
    model = root / "model.pt"
    _checkpoint(model)
    sheet = root / "sections.tsv"
    sheet.write_text(code_blocks(README.read_text(), "tsv")[0])
    paths = {"/path/to/new_exports": new, "/path/to/exports": exports,
             "/path/to/model.pt": model, "config/sections.tsv": sheet}
    return {"work": work, "paths": paths}


def _substitute(command: str, paths: dict) -> str:
    for placeholder in PLACEHOLDERS:
        command = command.replace(placeholder, str(paths[placeholder]))
    return command


def _job_stats(output: str) -> str:
    if "Job stats:" not in output:
        return "nothing to be done" if "Nothing to be done" in output else "?"
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return ", ".join(f"{m.group(1)} {m.group(2)}"
                     for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M))


#: Targets quick enough to make for real (the others run as a dry run).
QUICK = re.compile(r"results/ingest/[^/\s]+\.json")


def _run_snakemake(command: str, checkout: dict) -> str:
    words = shlex.split(_substitute(command, checkout["paths"]))
    assert words[0] == "snakemake"
    targets = [w for w in words[1:words.index("--config") if "--config" in words else None]
               if w.startswith("results/")]
    real = bool(targets) and all(QUICK.fullmatch(t) for t in targets)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([sys.executable, "-m", "snakemake", *([] if real else ["--dry-run"]),
                        *words[1:]],
                       cwd=checkout["work"], capture_output=True, text=True, timeout=900,
                       env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"README command failed: {command}\n{out[-6000:]}"
    if real:
        for t in targets:
            assert (checkout["work"] / t).is_file(), t
        return f"made {', '.join(targets)} ({_job_stats(out)})"
    return "dry run: " + _job_stats(out)


def _check(part: str, checkout: dict) -> str:
    """Run or check one part of a README command; return what it printed, in brief."""
    if part.startswith("snakemake "):
        return _run_snakemake(part, checkout)
    if part.startswith("python3 -m venv") or part == ". .venv/bin/activate":
        return "environment setup (not run)"
    m = re.fullmatch(r"(?:\.venv/bin/)?pip install (?:-q )?-r (\S+)", part)
    if m:
        assert (ROOT / m.group(1)).is_file(), part
        return f"{m.group(1)} exists (not installed)"
    if re.fullmatch(r"(?:\.venv/bin/)?python -m pytest", part):
        return "the test suite (this run)"
    m = re.fullmatch(r'pip install "(napari\[pyqt5\]==\S+)"', part)
    if m:
        assert m.group(1) in (ROOT / ".ci" / "run").read_text(), f"{part}: not .ci/run's pin"
        return "napari as pinned in .ci/run (not installed)"
    if part == "pip install --no-deps -e .":
        assert '[project.entry-points."napari.manifest"]' in (ROOT / "pyproject.toml").read_text()
        return "the package with its napari manifest (not installed)"
    if part.startswith("napari --plugin "):
        _, _, plugin, *files = shlex.split(part)
        assert plugin == yaml.safe_load((ROOT / "src/em2fm/napari.yaml").read_text())["name"]
        assert files and all(f.endswith((".ome.tif", ".ome.tiff")) for f in files), part
        return "napari with the em2fm reader (its GUI: tests/test_napari_reader.py)"
    raise AssertionError(f"README command the test does not know how to check: {part!r}. "
                         "Fix: teach tests/test_readme.py::_check")


def test_every_readme_command_works(checkout):
    cmds = commands(README.read_text())
    assert len(cmds) >= 8
    report = []
    for cmd in cmds:
        results = [_check(part.strip(), checkout) for part in cmd.split("&&")]
        report.append(f"{cmd}\n    -> {' | '.join(results)}")
    print("\n".join(report))
