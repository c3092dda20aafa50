"""Rule ingest: validate one section's Odemis exports and write internal files."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import ingest

ingest.run(
    folder=snakemake.params.folder,
    section=snakemake.wildcards.section,
    channels=snakemake.params.channels,
    dyes=snakemake.params.dyes,
    wavelength_tolerance_nm=snakemake.params.wavelength_tolerance_nm,
    em_stream=snakemake.params.em_stream,
    json_path=snakemake.output.json,
    npz_path=snakemake.output.npz,
    role=snakemake.params.role,
    name=snakemake.params.name,
)
