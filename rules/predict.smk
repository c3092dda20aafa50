# Whole-section prediction from EM alone, as OME-TIFF placed in the stage frame, on the
# model's own grid (its pixel size and em_scale), trained here or given (model=PATH).


rule predict:
    input:
        json="results/ingest/{section}.json",
        npz="results/ingest/{section}.npz",
        model=model_file,
    output:
        prediction="results/predictions/{section}.ome.tif",
        uncertainty="results/predictions/{section}.uncertainty.ome.tif",
    log:
        "results/logs/predict/{section}.log",
    benchmark:
        "results/benchmarks/predict/{section}.tsv"
    conda:
        "../envs/predict.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        pixel_size_nm=config["tiles"]["pixel_size_nm"],
        model_card=MODEL_CARD,
        settings=config["predict"],
        device=config["train"]["device"],
    script:
        "../scripts/predict.py"
