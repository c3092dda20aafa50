"""Rule register: round 0, the multimodal FM -> EM registration of one section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import register

register.run_multimodal(
    ingest_json=snakemake.input.json,
    ingest_npz=snakemake.input.npz,
    channel=snakemake.params.channel,
    settings=snakemake.params.settings,
    seed=snakemake.params.seed,
    json_path=snakemake.output.json,
)
