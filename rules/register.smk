# FM -> EM registration: stage metadata, refined by mutual information (SimpleITK).


rule register:
    input:
        json="results/ingest/{section}.json",
        npz="results/ingest/{section}.npz",
    output:
        json="results/registration/{section}.json",
        overlay=report(
            "results/registration/{section}.png",
            caption="../report/registration.rst",
            category="Registration",
            labels={"section": "{section}"},
        ),
    log:
        "results/logs/register/{section}.log",
    benchmark:
        "results/benchmarks/register/{section}.tsv"
    conda:
        "../envs/register.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        channel=config["register"]["channel"],
        settings=config["register"],
        seed=config["seed"],
    script:
        "../scripts/register.py"
