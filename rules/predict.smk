# Whole-section prediction from EM alone, as OME-TIFF placed in the stage frame.


rule predict:
    input:
        json="results/ingest/{section}.json",
        npz="results/ingest/{section}.npz",
        model="results/model/model.pt",
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
        settings=config["predict"],
        device=config["train"]["device"],
    script:
        "../scripts/predict.py"
