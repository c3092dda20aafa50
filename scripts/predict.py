"""Rule predict: whole-section fluorescence prediction from EM alone."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import predict

predict.run(
    ingest_json=snakemake.input.json,
    ingest_npz=snakemake.input.npz,
    model_path=snakemake.input.model,
    pixel_size_nm=snakemake.params.pixel_size_nm,
    settings=snakemake.params.settings,
    device=snakemake.params.device,
    threads=snakemake.threads,
    prediction_path=snakemake.output.prediction,
    uncertainty_path=snakemake.output.uncertainty,
    model_card=snakemake.params.model_card,
)
