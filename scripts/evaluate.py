"""Rule evaluate: metrics of every section and channel."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import evaluate

evaluate.run(
    sections=snakemake.params.sections,
    tiles_npz=list(snakemake.input.tiles),
    predictions=list(snakemake.input.predictions),
    ingest_json=list(snakemake.input.ingest),
    registration_json=list(snakemake.input.registration),
    model_path=snakemake.input.model,
    truth_dir=snakemake.params.truth_dir,
    tsv_path=snakemake.output.metrics,
    rounds_path=snakemake.output.rounds,
)
