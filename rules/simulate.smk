# Embedded default dataset: simulated Odemis exports with known ground truth.


rule simulate:
    output:
        exports=directory("results/simulate/exports/{section}"),
        truth_json="results/simulate/truth/{section}.json",
        truth_npz="results/simulate/truth/{section}.npz",
    log:
        "results/logs/simulate/{section}.log",
    benchmark:
        "results/benchmarks/simulate/{section}.tsv"
    conda:
        "../envs/simulate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        index=section_index,
        seed=config["seed"],
        variant=config["simulate"]["variant"],
        montage=config["simulate"]["montage"],
        physics=config["simulate"]["params"],
    script:
        "../scripts/simulate.py"
