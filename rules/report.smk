# One self-contained HTML report: what was done, how good it is, where it fails, provenance.


rule report:
    input:
        metrics="results/metrics.tsv",
        rounds="results/registration_rounds.tsv",
        training="results/model/training.tsv",
        model="results/model/model.pt",
        tiles=expand("results/tiles/{section}.npz", section=SECTIONS),
        predictions=expand("results/predictions/{section}.ome.tif", section=SECTIONS),
        uncertainty=expand(
            "results/predictions/{section}.uncertainty.ome.tif", section=SECTIONS
        ),
        ingest=expand("results/ingest/{section}.json", section=SECTIONS),
        registration=expand("results/registration/{section}.json", section=SECTIONS),
        overlays=expand("results/registration/{section}.png", section=SECTIONS),
        benchmarks=upstream_benchmarks,
    output:
        report(
            "results/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        sections=SECTIONS,
        config=config,
        simulated=PLAN.simulated,
        settings=config["report"],
    script:
        "../scripts/report.py"
