# One self-contained HTML report: what was done, how good it is, where it fails, provenance.


rule report:
    input:
        unpack(report_inputs),
        model=model_file,
        tiles=expand("results/tiles/{section}.npz", section=FM_SECTIONS),
        predictions=expand("results/predictions/{section}.ome.tif", section=SECTIONS),
        uncertainty=expand(
            "results/predictions/{section}.uncertainty.ome.tif", section=SECTIONS
        ),
        ingest=expand("results/ingest/{section}.json", section=SECTIONS),
        registration=expand("results/registration/{section}.json", section=FM_SECTIONS),
        overlays=expand("results/registration/{section}.png", section=FM_SECTIONS),
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
        fm_sections=FM_SECTIONS,
        em_only=EM_ONLY,
        model_card=MODEL_CARD,
        config=config,
        simulated=PLAN.simulated,
        settings=config["report"],
    script:
        "../scripts/report.py"
