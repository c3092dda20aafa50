# Train the asymmetric U-Net on the training sections; select on validation PCC.
# Resumable: the resume state lives in checkpoint/ beside model.pt, which is NOT a declared
# output (Snakemake deletes declared outputs before a rerun), so rerunning the target after
# a kill or a time limit (--rerun-incomplete; the SLURM profile retries) continues from it.


rule train:
    input:
        tiles=training_tiles,
        tiles_json=training_tiles_json,
        ingest=first_ingest_json,
    output:
        model="results/model/model.pt",
        last="results/model/last.pt",
        card="results/model/model.json",
        log_tsv=report(
            "results/model/training.tsv",
            caption="../report/training.rst",
            category="Training",
        ),
    log:
        "results/logs/train.log",
    benchmark:
        "results/benchmarks/train.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        model=unet_settings(),
        settings=config["train"],
        tiles=config["tiles"],
        seed=config["seed"],
    script:
        "../scripts/train.py"


# The model of a registration round: trained on that round's registrations, it predicts
# the FM that the next round registers to (fewer steps: register.refine_train_steps).
use rule train as train_round with:
    input:
        tiles=round_training_tiles,
        tiles_json=round_training_tiles_json,
        ingest=first_ingest_json,
    output:
        model="results/registration/round{round}/model/model.pt",
        last="results/registration/round{round}/model/last.pt",
        card="results/registration/round{round}/model/model.json",
        log_tsv="results/registration/round{round}/model/training.tsv",
    log:
        "results/logs/train/round{round}.log",
    benchmark:
        "results/benchmarks/train/round{round}.tsv"
    params:
        model=unet_settings(),
        settings=round_train_settings(),
        tiles=config["tiles"],
        seed=config["seed"],
