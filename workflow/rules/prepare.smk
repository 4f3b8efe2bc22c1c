rule prepare:
    """Download (or read from $VAEBENCH_DATA_MIRROR), verify SHA-256 and split a dataset."""
    input:
        sources("prepare"),
    output:
        paths.PREPARED,
    params:
        cfg=lambda w: STUDY["datasets"][w.dataset],
    log:
        "logs/prepare/{dataset}.log",
    shell:
        "{VAEBENCH} prepare --params {STUDY_FILE} --dataset {wildcards.dataset} 2> {log}"
