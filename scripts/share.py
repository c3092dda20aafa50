"""Rule share: the zip a colleague can inspect and rerun."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import share

share.run(
    zip_path=snakemake.output[0],
    report_html=snakemake.input.report,
    metrics_tsv=snakemake.input.get("metrics") or None,
    rounds_tsv=snakemake.input.get("rounds") or None,
    model=snakemake.input.model,
    training_tsv=snakemake.input.get("training") or None,
    ingest_json=list(snakemake.input.ingest),
    config=snakemake.params.config,
    workflow_dir=snakemake.params.workflow_dir,
    sections=snakemake.params.sections,
    model_card=snakemake.input.get("card") or None,
)
