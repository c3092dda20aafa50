"""Rule report: the self-contained HTML report."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))
from em2fm.logs import setup_logging

setup_logging(snakemake.log[0])

from em2fm import report

report.run(
    metrics_tsv=snakemake.input.get("metrics") or None,
    training_tsv=snakemake.input.get("training") or None,
    model_path=snakemake.input.model,
    tiles_npz=list(snakemake.input.tiles),
    predictions=list(snakemake.input.predictions),
    uncertainties=list(snakemake.input.uncertainty),
    ingest_json=list(snakemake.input.ingest),
    registration_json=list(snakemake.input.registration),
    overlays=list(snakemake.input.overlays),
    rounds_tsv=snakemake.input.get("rounds") or None,
    sections=snakemake.params.sections,
    config=snakemake.params.config,
    simulated=snakemake.params.simulated,
    zoom_size_um=snakemake.params.settings["zoom_size_um"],
    local_pcc_um=snakemake.params.settings["local_pcc_um"],
    max_section_figures=snakemake.params.settings["max_section_figures"],
    benchmarks=list(snakemake.input.benchmarks),
    benchmark_root="results/benchmarks",
    html_path=snakemake.output[0],
    fm_sections=snakemake.params.fm_sections,
    em_only=snakemake.params.em_only,
    em_only_npz=list(snakemake.input.ingest_em_only),
    model_card=snakemake.params.model_card,
)
