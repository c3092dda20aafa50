"""Rule simulate: write one simulated section's Odemis exports and its ground truth."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import simulate

simulate.run(
    section=snakemake.wildcards.section,
    index=snakemake.params.index,
    seed=snakemake.params.seed,
    physics=snakemake.params.physics,
    variant=snakemake.params.variant,
    montage=snakemake.params.montage,
    exports_dir=snakemake.output.exports,
    truth_json=snakemake.output.truth_json,
    truth_npz=snakemake.output.truth_npz,
)
