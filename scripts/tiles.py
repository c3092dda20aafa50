"""Rule tiles: EM input and registered FM target of one section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import tiles

tiles.run(
    ingest_json=snakemake.input.ingest_json,
    ingest_npz=snakemake.input.ingest_npz,
    registration_json=snakemake.input.registration,
    settings=snakemake.params.settings,
    split=snakemake.params.split,
    reference_json=snakemake.input.get("reference") or None,
    npz_path=snakemake.output.npz,
    json_path=snakemake.output.json,
    fm_path=snakemake.output.fm,
)
