"""Rule train: fit the asymmetric U-Net on the training sections."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import train

train.run(
    tiles_npz=list(snakemake.input.tiles),
    ingest_json=snakemake.input.ingest,
    unet=snakemake.params.model,
    settings=snakemake.params.settings,
    tiles=snakemake.params.tiles,
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    model_path=snakemake.output.model,
    last_path=snakemake.output.last,
    log_path=snakemake.output.log_tsv,
    card_path=snakemake.output.card,
)
