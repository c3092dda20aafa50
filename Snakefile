# em2fm: predict fluorescence from electron microscopy (integrated CLEM).
# simulate -> ingest -> register -> tiles -> train -> predict -> evaluate -> report -> share
# Main job: snakemake --cores 8 (results/report.html and results/share.zip)


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/ingest.smk"
include: "rules/register.smk"
include: "rules/tiles.smk"
include: "rules/train.smk"
include: "rules/predict.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/share.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        "results/report.html",
        "results/share.zip",
