# Validate a section's Odemis exports and convert them to internal files (EM only for a
# predict section).


rule ingest:
    input:
        section_exports,
    output:
        json="results/ingest/{section}.json",
        npz="results/ingest/{section}.npz",
    log:
        "results/logs/ingest/{section}.log",
    benchmark:
        "results/benchmarks/ingest/{section}.tsv"
    conda:
        "../envs/ingest.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        folder=section_folder,
        name=section_name,
        role=section_split,
        channels=config["channels"],
        dyes=config["dyes"],
        wavelength_tolerance_nm=config["ingest"]["wavelength_tolerance_nm"],
        em_stream=section_em_stream,
    script:
        "../scripts/ingest.py"
