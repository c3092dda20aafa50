# Config validation, section lists, wildcard constraints and small input functions.
import re
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from em2fm.config import check, coerce_to_schema, load_schema  # noqa: E402
from em2fm.config import model_shorthand  # noqa: E402
from em2fm.sections import export_files, plan  # noqa: E402

_SCHEMA = Path(workflow.basedir) / "schemas" / "config.schema.yaml"
config.update(coerce_to_schema(model_shorthand(dict(config)), load_schema(_SCHEMA)))


validate(config, "../schemas/config.schema.yaml")
check(config)

# Sections and their roles (train, val, test, predict). A split that cannot train is not an
# error here: the rules that train raise it (PLAN.require_training), so any section can be
# ingested, registered and predicted on its own.
PLAN = plan(config)
SECTIONS = PLAN.sections
FM_SECTIONS = PLAN.with_fm  # registered, tiled, evaluated
EM_ONLY = PLAN.em_only  # predict sections: EM only

# A trained model to apply (model=PATH): nothing is trained; its channels and grid are used.
MODEL_CARD = None
if PLAN.model is not None:
    from em2fm.pretrained import apply_settings, model_card

    MODEL_CARD = model_card(PLAN.model)
    config.update(apply_settings(config, MODEL_CARD))


wildcard_constraints:
    section="|".join(re.escape(s) for s in SECTIONS),


def section_exports(wildcards):
    """Export files of a section (or the simulator's output folder)."""
    if PLAN.simulated:
        return f"{PLAN.raw_dir}/{wildcards.section}"
    return [str(p) for p in export_files(Path(section_folder(wildcards)))]


def section_folder(wildcards):
    """The folder holding a section's exports (its name may differ from the safe name)."""
    return f"{PLAN.raw_dir}/{PLAN.folder(wildcards.section)}"


def section_name(wildcards):
    """The section's folder name, for display."""
    return PLAN.folder(wildcards.section)


def section_em_stream(wildcards):
    """SEM stream of a section: the section sheet's, else ingest.em_stream."""
    return PLAN.em_streams.get(wildcards.section)


def unet_settings():
    """The network's architecture keys of `model` (without `path`)."""
    return {k: v for k, v in config["model"].items() if k != "path"}


def model_file(wildcards):
    """The model that predicts: the given one (model=PATH) or the one trained here."""
    return PLAN.model if PLAN.model is not None else "results/model/model.pt"


def training_log(wildcards):
    """The training TSV of the model trained here (none when a model is given)."""
    return [] if PLAN.model is not None else "results/model/training.tsv"


def section_index(wildcards):
    """Index of a section in the sorted section list (simulation seed)."""
    return SECTIONS.index(wildcards.section)


def section_split(wildcards):
    """The section's role: train, val, test or predict."""
    return PLAN.split[wildcards.section]


def training_tiles(wildcards):
    """Tiles of the training and validation sections (raises when none can train)."""
    PLAN.require_training()
    return expand("results/tiles/{section}.npz", section=PLAN.in_split("train", "val"))


def truth_files(wildcards):
    """Ground truth of every evaluated section, where known (simulated data)."""
    if PLAN.truth_dir is None:
        return []
    return expand(f"{PLAN.truth_dir}/{{section}}.json", section=FM_SECTIONS) + expand(
        f"{PLAN.truth_dir}/{{section}}.npz", section=FM_SECTIONS
    )


def training_tiles_json(wildcards):
    """Tiles metadata of the training and validation sections."""
    PLAN.require_training()
    return expand("results/tiles/{section}.json", section=PLAN.in_split("train", "val"))


def first_ingest_json(wildcards):
    """Ingest metadata of the first training section (channel names and wavelengths)."""
    PLAN.require_training()
    return f"results/ingest/{PLAN.in_split('train')[0]}.json"


def report_inputs(wildcards):
    """Inputs of the report: metrics only where a section has FM; the training log only
    where a model was trained here; the EM of the predict sections."""
    out = {
        "ingest_em_only": expand("results/ingest/{section}.npz", section=EM_ONLY),
        "training": training_log(wildcards),
    }
    if FM_SECTIONS:
        out["metrics"] = "results/metrics.tsv"
        out["rounds"] = "results/registration_rounds.tsv"
    return out


def share_inputs(wildcards):
    """What the share bundle holds beside the report: the model (given or trained here),
    and the metrics, rounds, training log and model card where this run has them."""
    out = {k: v for k, v in report_inputs(wildcards).items() if k != "ingest_em_only"}
    out["model"] = model_file(wildcards)
    if PLAN.model is None:
        out["card"] = "results/model/model.json"
    return out


# Prediction-driven registration rounds. Each round trains a model on the previous round's
# registrations; with a given model (model=PATH) one round registers to its prediction;
# where no model can be trained (too few sections) the final registration is round 0.
REFINE_ROUNDS = int(config["register"]["refine_rounds"])
if PLAN.model is not None:
    REFINE_ROUNDS = min(REFINE_ROUNDS, 1)
elif PLAN.split_error is not None:
    REFINE_ROUNDS = 0


def previous_round_registration(wildcards):
    """Registration JSON of the round before ``wildcards.round``."""
    return (
        f"results/registration/round{int(wildcards.round) - 1}/{wildcards.section}.json"
    )


def previous_round_model(wildcards):
    """Model trained on the registrations of the round before ``wildcards.round`` (the
    given model, with model=PATH)."""
    if PLAN.model is not None:
        return PLAN.model
    return f"results/registration/round{int(wildcards.round) - 1}/model/model.pt"


def final_round_registration(wildcards):
    """The last registration round of a section (register.refine_rounds)."""
    return f"results/registration/round{REFINE_ROUNDS}/{wildcards.section}.json"


def round_training_tiles(wildcards):
    """Tiles of the training and validation sections at one registration round."""
    PLAN.require_training()
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
    trained_here = PLAN.model is None
    fit = PLAN.in_split("train", "val") if trained_here else []
    per_fm = ["register/round0", "register/final", "tiles"]
    per_fm += [f"register/round{r + 1}" for r in rounds]
    per_section = ["ingest", "predict"] + (["simulate"] if PLAN.simulated else [])
    files = [
        f"results/benchmarks/{step}/{s}.tsv" for step in per_section for s in SECTIONS
    ]
    files += [
        f"results/benchmarks/{step}/{s}.tsv" for step in per_fm for s in FM_SECTIONS
    ]
    if trained_here:
        files += [
            f"results/benchmarks/tiles/round{r}/{s}.tsv" for r in rounds for s in fit
        ]
        files += [f"results/benchmarks/train/round{r}.tsv" for r in rounds]
        files.append("results/benchmarks/train.tsv")
    if FM_SECTIONS:
        files.append("results/benchmarks/evaluate.tsv")
    return files


def tile_grid_reference(wildcards):
    """Ingest JSON of the first training section: its FM pixel size is the target grid of
    every section when tiles.pixel_size_nm is null, so all sections share the model's
    grid (none when the grid is configured or given by a model)."""
    if config["tiles"]["pixel_size_nm"] is not None or not PLAN.in_split("train"):
        return []
    return f"results/ingest/{PLAN.in_split('train')[0]}.json"
