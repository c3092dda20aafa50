# FM -> EM registration, in rounds: round 0 is the multimodal search from the stage
# metadata; round r >= 1 registers the measured FM to the prediction of a model trained on
# the round r-1 registrations (its tiles and model live in results/registration/round{r-1}/).
# The final registration of a section is its last round, with the QC overlay.


rule register:
    input:
        json="results/ingest/{section}.json",
        npz="results/ingest/{section}.npz",
    output:
        json="results/registration/round0/{section}.json",
    log:
        "results/logs/register/round0/{section}.log",
    benchmark:
        "results/benchmarks/register/round0/{section}.tsv"
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


rule register_refine:
    input:
        json="results/ingest/{section}.json",
        npz="results/ingest/{section}.npz",
        previous=previous_round_registration,
        model=previous_round_model,
    output:
        json="results/registration/round{round}/{section}.json",
    log:
        "results/logs/register/round{round}/{section}.log",
    benchmark:
        "results/benchmarks/register/round{round}/{section}.tsv"
    wildcard_constraints:
        round="[1-9][0-9]*",
    conda:
        "../envs/register.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        settings=config["register"],
        pixel_size_nm=config["tiles"]["pixel_size_nm"],
        device=config["train"]["device"],
    script:
        "../scripts/register_refine.py"


rule register_final:
    input:
        json="results/ingest/{section}.json",
        npz="results/ingest/{section}.npz",
        last=final_round_registration,
    output:
        json="results/registration/{section}.json",
        overlay=report(
            "results/registration/{section}.png",
            caption="../report/registration.rst",
            category="Registration",
            labels={"section": "{section}"},
        ),
    log:
        "results/logs/register/final/{section}.log",
    benchmark:
        "results/benchmarks/register/final/{section}.tsv"
    conda:
        "../envs/register.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    script:
        "../scripts/register_final.py"
