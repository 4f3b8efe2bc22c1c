rule train:
    """Train one cell (dataset x model x seed): checkpoint + per-epoch log, tracked in MLflow."""
    input:
        sources("train"),
        data=paths.PREPARED,
    output:
        checkpoint=paths.CHECKPOINT,
        log_csv=paths.TRAIN_LOG,
    params:
        # only this cell's slice of the study triggers a rerun
        model=lambda w: STUDY["models"][w.model],
        train=lambda w: STUDY["train"],
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/train/{dataset}/{model}/seed{seed}.log",
    shell:
        "{VAEBENCH} train --params {STUDY_FILE} --dataset {wildcards.dataset} --model {wildcards.model}"
        " --seed {wildcards.seed} --threads {threads} 2> {log}"
