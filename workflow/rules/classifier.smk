rule classifier:
    """Train the small CNN whose features define fid_classifier on this dataset."""
    input:
        sources("classifier"),
        data=paths.PREPARED,
    output:
        model=paths.CLASSIFIER,
        metrics=paths.CLASSIFIER_METRICS,
    params:
        cfg=lambda w: STUDY["classifier"],
    threads: 1
    log:
        "logs/classifier/{dataset}.log",
    shell:
        "{VAEBENCH} classifier --params {STUDY_FILE} --dataset {wildcards.dataset} --threads {threads} 2> {log}"
