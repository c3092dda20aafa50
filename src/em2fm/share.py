"""Share: one zip a colleague can open, inspect and rerun (results/share.zip).

Contents (paths inside the zip, under ``em2fm-share/``):

- ``README.md``: what each file is, how to inspect, verify and rerun;
- ``report.html``: the self-contained report;
- ``metrics.tsv``, ``registration_rounds.tsv``: the tables behind it;
- ``model/model.pt``, ``model/training.tsv`` and ``model/model.json`` (the model card,
  where the run wrote one);
- ``config.yaml``: the configuration as resolved by the workflow (rerun with it);
- ``envs/*.yaml``: the pinned conda environments of every rule;
- ``workflow/``: the workflow's source (Snakefile, rules, scripts, package, schema,
  profiles), so the bundle reruns without a checkout;
- ``inputs.sha256``: SHA-256 of every input export (``sha256sum -c`` format, paths as the
  run saw them);
- ``provenance.json``: git commit and dirty flag, software versions, creation time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zipfile
from pathlib import Path

import yaml

from . import io
from .provenance import git_state, sha256, versions

log = logging.getLogger(__name__)

ROOT = "em2fm-share"
# workflow source shipped in the bundle, relative to the workflow's folder
WORKFLOW_FILES = ("Snakefile", "config.yaml", "pyproject.toml", "README.md", "LICENSE",
                  "requirements.txt")
WORKFLOW_DIRS = ("rules", "scripts", "src", "envs", "schemas", "profiles", "report")
SKIP_PARTS = {"__pycache__", ".snakemake", ".ipynb_checkpoints"}


def input_checksums(ingest_json: list[str | Path]) -> list[tuple[str, str]]:
    """(sha256, path) of every export named by the sections' ingest JSONs."""
    out = []
    for p in ingest_json:
        for f in io.read_json(p)["files"]:
            if not Path(f).is_file():
                raise FileNotFoundError(
                    f"{f}: input export listed in {p} is missing; the bundle would not "
                    "let a colleague check the inputs. Fix: restore the file or rerun ingest.")
            out.append((sha256(f), str(f)))
    return out


def workflow_files(workflow_dir: str | Path) -> list[Path]:
    """The workflow's source files to ship (relative paths)."""
    base = Path(workflow_dir)
    out = [Path(f) for f in WORKFLOW_FILES if (base / f).is_file()]
    for d in WORKFLOW_DIRS:
        for p in sorted((base / d).rglob("*")):
            rel = p.relative_to(base)
            if p.is_file() and not SKIP_PARTS & set(rel.parts) and p.suffix != ".pyc":
                out.append(rel)
    return out


def readme(provenance: dict, sections: list[str], has_card: bool) -> str:
    """The colleague's guide to the bundle."""
    commit = provenance.get("git commit", "unknown")
    dirty = provenance.get("git dirty", "unknown")
    card = ("- `model/model.json`: the model card (what the model was trained on, how, how "
            "good it is, its limits).\n" if has_card else "")
    return f"""# em2fm results, ready to share

Fluorescence (FM) predicted from electron microscopy (EM) by em2fm, for sections
{", ".join(sections)}. Created {provenance["created"]} from em2fm commit `{commit}`
(uncommitted changes: {dirty}).

## Inspect

- `report.html`: open it in any browser; it needs no network and no other file. It says
  what was done, how good the prediction is (PCC, SSIM, NRMSE with confidence intervals,
  beside trivial baselines) and where it fails (local PCC maps, zooms).
- `metrics.tsv`: one row per section and channel (the report's numbers);
  `registration_rounds.tsv`: the FM-to-EM registration, round by round.
- `model/model.pt`: the trained network (PyTorch state dict with its settings);
  `model/training.tsv`: loss and validation PCC per step.
{card}- `config.yaml`: the configuration the run used, every default resolved.
- `envs/`: the pinned conda environment of each step; `provenance.json`: software versions.

## Check the inputs

`inputs.sha256` lists the SHA-256 of every input export, with its path as the run saw it.
From the folder the run was started in (or after placing the exports at those paths):

    sha256sum -c inputs.sha256

## Rerun

`workflow/` holds the workflow's source at this commit. With Snakemake 9 and conda:

    cd workflow
    snakemake --cores 8 --sdm conda --configfile ../config.yaml --directory /path/to/rundir

`raw_dir` in `config.yaml` names the folder of the Odemis exports (null: the simulated
dataset, regenerated from the seed). Edit it to point at your copy of the exports, check
them with `inputs.sha256`, then compare the new `results/metrics.tsv` with `metrics.tsv`.
The same seed on the same hardware gives the same numbers; on other hardware (a GPU) expect
small differences in the last digits.
"""


def build(zip_path: str | Path, *, report_html: str | Path, metrics_tsv: str | Path | None,
          rounds_tsv: str | Path | None, model: str | Path, training_tsv: str | Path | None,
          ingest_json: list[str | Path], config: dict, workflow_dir: str | Path,
          sections: list[str], model_card: str | Path | None = None) -> list[str]:
    """Write the bundle; return the names inside the zip (sorted).

    ``metrics_tsv`` and ``rounds_tsv`` are None without a section with FM, ``training_tsv``
    and ``model_card`` None for a model given with ``model=PATH`` (trained elsewhere).
    """
    prov = {"created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            **git_state(workflow_dir), **versions()}
    sums = input_checksums(ingest_json)
    members = {"report.html": report_html, "metrics.tsv": metrics_tsv,
               "registration_rounds.tsv": rounds_tsv, "model/model.pt": model,
               "model/training.tsv": training_tsv, "model/model.json": model_card}
    files: dict[str, Path] = {k: Path(v) for k, v in members.items() if v}
    wf = Path(workflow_dir)
    for rel in workflow_files(wf):
        files[f"workflow/{rel.as_posix()}"] = wf / rel
        if rel.parts[0] == "envs":
            files[rel.as_posix()] = wf / rel
    texts = {
        "README.md": readme(prov, sections, model_card is not None),
        "config.yaml": yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        "inputs.sha256": "".join(f"{h}  {p}\n" for h, p in sums),
        "provenance.json": json.dumps(prov, indent=2) + "\n",
    }
    with io.atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in texts.items():
            z.writestr(f"{ROOT}/{name}", text)
        for name, src in files.items():
            z.write(src, f"{ROOT}/{name}")
    names = sorted([*texts, *files])
    log.info("share: %s, %d files, %.1f MB", zip_path, len(names),
             Path(zip_path).stat().st_size / 1e6)
    return names


def run(zip_path: str, report_html: str, metrics_tsv: str | None, rounds_tsv: str | None,
        model: str, training_tsv: str | None, ingest_json: list[str], config: dict,
        workflow_dir: str, sections: list[str], model_card: str | None = None) -> None:
    """The rule's entry point (see :func:`build`)."""
    build(zip_path, report_html=report_html, metrics_tsv=metrics_tsv, rounds_tsv=rounds_tsv,
          model=model, training_tsv=training_tsv, ingest_json=ingest_json, config=config,
          workflow_dir=workflow_dir, sections=sections, model_card=model_card)
