rule evaluate:
    """ELBO, importance-weighted L_k, bits/dim, FID and image grids of one cell."""
    input:
        sources("evaluate"),
        data=paths.PREPARED,
        checkpoint=paths.CHECKPOINT,
        classifier=paths.CLASSIFIER,
    output:
        metrics=paths.METRICS,
        samples=paths.SAMPLES_PNG,
        recon=paths.RECON_PNG,
    params:
        cfg=lambda w: STUDY["evaluate"],
        model=lambda w: STUDY["models"][w.model],
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/evaluate/{dataset}/{model}/seed{seed}.log",
    shell:
        "{VAEBENCH} evaluate --params {STUDY_FILE} --dataset {wildcards.dataset} --model {wildcards.model}"
        " --seed {wildcards.seed} --threads {threads} 2> {log}"
