# One self-contained HTML report: metrics, reference figures, configuration, provenance.


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
        zoom_size_um=config["report"]["zoom_size_um"],
    script:
        "../scripts/report.py"
