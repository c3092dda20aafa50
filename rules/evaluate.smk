# Metrics per section and channel: PCC, trivial baselines, noise ceiling, registration error
# (sections with FM only; predict sections have nothing to compare with).


rule evaluate:
    input:
        tiles=expand("results/tiles/{section}.npz", section=FM_SECTIONS),
        tiles_json=expand("results/tiles/{section}.json", section=FM_SECTIONS),
        predictions=expand("results/predictions/{section}.ome.tif", section=FM_SECTIONS),
        ingest=expand("results/ingest/{section}.json", section=FM_SECTIONS),
        ingest_npz=expand("results/ingest/{section}.npz", section=FM_SECTIONS),
        registration=expand("results/registration/{section}.json", section=FM_SECTIONS),
        model=model_file,
        truth=truth_files,
    output:
        metrics=report(
            "results/metrics.tsv",
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        rounds=report(
            "results/registration_rounds.tsv",
            caption="../report/registration_rounds.rst",
            category="Registration",
        ),
    log:
        "results/logs/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        sections=FM_SECTIONS,
        truth_dir=PLAN.truth_dir,
    script:
        "../scripts/evaluate.py"
