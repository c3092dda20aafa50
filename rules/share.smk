# One zip to share: report, metrics, model (and card), config, environments, workflow
# source and input checksums, with a README on how to inspect and rerun.


rule share:
    input:
        unpack(share_inputs),
        report="results/report.html",
        ingest=expand("results/ingest/{section}.json", section=SECTIONS),
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
