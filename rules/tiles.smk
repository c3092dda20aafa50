# EM input and registered FM target on matching grids, with the coverage mask.


rule tiles:
    input:
        ingest_json="results/ingest/{section}.json",
        ingest_npz="results/ingest/{section}.npz",
        registration="results/registration/{section}.json",
        reference=tile_grid_reference,
    output:
        npz="results/tiles/{section}.npz",
        json="results/tiles/{section}.json",
        fm="results/tiles/{section}.fm.ome.tif",
    log:
        "results/logs/tiles/{section}.log",
    benchmark:
        "results/benchmarks/tiles/{section}.tsv"
    conda:
        "../envs/tiles.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        settings=config["tiles"],
        split=section_split,
    script:
        "../scripts/tiles.py"


# Tiles of a prediction-driven registration round (results/registration/round{round}/).
use rule tiles as tiles_round with:
    input:
        ingest_json="results/ingest/{section}.json",
        ingest_npz="results/ingest/{section}.npz",
        registration="results/registration/round{round}/{section}.json",
        reference=tile_grid_reference,
    output:
        npz="results/registration/round{round}/tiles/{section}.npz",
        json="results/registration/round{round}/tiles/{section}.json",
        fm="results/registration/round{round}/tiles/{section}.fm.ome.tif",
    log:
        "results/logs/tiles/round{round}/{section}.log",
    benchmark:
        "results/benchmarks/tiles/round{round}/{section}.tsv"
