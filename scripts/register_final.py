"""Rule register_final: a section's final registration (last round) and its QC overlay."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import register

register.run_final(
    ingest_json=snakemake.input.json,
    ingest_npz=snakemake.input.npz,
    last_json=snakemake.input.last,
    json_path=snakemake.output.json,
    png_path=snakemake.output.overlay,
)
