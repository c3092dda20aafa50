# One zip to share: report, metrics, model (and card), config, environments, workflow
# source and input checksums, with a README on how to inspect and rerun.


rule share:
    input:
        report="results/report.html",
        metrics="results/metrics.tsv",
        rounds="results/registration_rounds.tsv",
        model="results/model/model.pt",
        training="results/model/training.tsv",
        ingest=expand("results/ingest/{section}.json", section=SECTIONS),
        card="results/model/model.json",
    output:
        "results/share.zip",
    log:
        "results/logs/share.log",
    benchmark:
        "results/benchmarks/share.tsv"
    conda:
        "../envs/share.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=config,
        sections=SECTIONS,
        workflow_dir=workflow.basedir,
    script:
        "../scripts/share.py"
