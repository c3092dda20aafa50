# Config validation, section lists, wildcard constraints and small input functions.
import re
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from em2fm.config import check, coerce_to_schema, load_schema  # noqa: E402
from em2fm.sections import export_files, plan  # noqa: E402

_SCHEMA = Path(workflow.basedir) / "schemas" / "config.schema.yaml"
config.update(coerce_to_schema(dict(config), load_schema(_SCHEMA)))


validate(config, "../schemas/config.schema.yaml")
check(config)

PLAN = plan(config)
SECTIONS = PLAN.sections


wildcard_constraints:
    section="|".join(re.escape(s) for s in SECTIONS),


def section_exports(wildcards):
    """Export files of a section (or the simulator's output folder)."""
    if PLAN.simulated:
        return f"{PLAN.raw_dir}/{wildcards.section}"
    return [str(p) for p in export_files(Path(PLAN.raw_dir) / wildcards.section)]


def section_folder(wildcards):
    """The folder holding a section's exports."""
    return f"{PLAN.raw_dir}/{wildcards.section}"


def section_index(wildcards):
    """Index of a section in the sorted section list (simulation seed)."""
    return SECTIONS.index(wildcards.section)


def section_split(wildcards):
    """train, val or test."""
    return PLAN.split[wildcards.section]


def training_tiles(wildcards):
    """Tiles of the training and validation sections."""
    return expand("results/tiles/{section}.npz", section=PLAN.in_split("train", "val"))


def truth_files(wildcards):
    """Ground truth of every section, where known (simulated data)."""
    if PLAN.truth_dir is None:
        return []
    return expand(f"{PLAN.truth_dir}/{{section}}.json", section=SECTIONS) + expand(
        f"{PLAN.truth_dir}/{{section}}.npz", section=SECTIONS
    )


def training_tiles_json(wildcards):
    """Tiles metadata of the training and validation sections."""
    return expand("results/tiles/{section}.json", section=PLAN.in_split("train", "val"))


def first_ingest_json(wildcards):
    """Ingest metadata of the first training section (channel names and wavelengths)."""
    return f"results/ingest/{PLAN.in_split('train')[0]}.json"


REFINE_ROUNDS = int(config["register"]["refine_rounds"])


def previous_round_registration(wildcards):
    """Registration JSON of the round before ``wildcards.round``."""
    return (
        f"results/registration/round{int(wildcards.round) - 1}/{wildcards.section}.json"
    )


def previous_round_model(wildcards):
    """Model trained on the registrations of the round before ``wildcards.round``."""
    return f"results/registration/round{int(wildcards.round) - 1}/model/model.pt"


def final_round_registration(wildcards):
    """The last registration round of a section (register.refine_rounds)."""
    return f"results/registration/round{REFINE_ROUNDS}/{wildcards.section}.json"


def round_training_tiles(wildcards):
    """Tiles of the training and validation sections at one registration round."""
    return expand(
        "results/registration/round{round}/tiles/{section}.npz",
        round=wildcards.round,
        section=PLAN.in_split("train", "val"),
    )


def round_training_tiles_json(wildcards):
    """Tiles metadata of the training and validation sections at one registration round."""
    return [p[: -len(".npz")] + ".json" for p in round_training_tiles(wildcards)]


def round_train_settings():
    """Training settings of a registration round's model (register.refine_train_steps)."""
    return {**config["train"], "steps": int(config["register"]["refine_train_steps"])}


def upstream_benchmarks(wildcards):
    """Benchmark files of every job the report depends on (wall time, peak memory)."""
    rounds = range(REFINE_ROUNDS)
    fit = PLAN.in_split("train", "val")
    per_section = ["ingest", "register/round0", "register/final", "tiles", "predict"]
    per_section += [f"register/round{r + 1}" for r in rounds]
    if PLAN.simulated:
        per_section.append("simulate")
    files = [
        f"results/benchmarks/{step}/{s}.tsv" for step in per_section for s in SECTIONS
    ]
    files += [f"results/benchmarks/tiles/round{r}/{s}.tsv" for r in rounds for s in fit]
    files += [f"results/benchmarks/train/round{r}.tsv" for r in rounds]
    return files + ["results/benchmarks/train.tsv", "results/benchmarks/evaluate.tsv"]
