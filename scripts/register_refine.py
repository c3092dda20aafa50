"""Rule register_refine: register a section's FM to the prediction of the previous round's model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import register

register.run_refine(
    ingest_json=snakemake.input.json,
    ingest_npz=snakemake.input.npz,
    previous_json=snakemake.input.previous,
    model_path=snakemake.input.model,
    round_=int(snakemake.wildcards.round),
    settings=snakemake.params.settings,
    pixel_size_nm=snakemake.params.pixel_size_nm,
    device=snakemake.params.device,
    threads=snakemake.threads,
    json_path=snakemake.output.json,
)
