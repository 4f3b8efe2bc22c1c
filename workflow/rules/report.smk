rule report:
    """Tables, grids, curves and the protocol of the whole study (reports/)."""
    input:
        sources("report"),
        metrics=[paths.METRICS.format(dataset=d, model=m, seed=s) for d, m, s in CELLS],
        logs=[paths.TRAIN_LOG.format(dataset=d, model=m, seed=s) for d, m, s in CELLS],
        samples=[paths.SAMPLES_PNG.format(dataset=d, model=m, seed=s) for d, m, s in CELLS],
        recon=[paths.RECON_PNG.format(dataset=d, model=m, seed=s) for d, m, s in CELLS],
        classifiers=[paths.CLASSIFIER_METRICS.format(dataset=d) for d in STUDY["grid"]["datasets"]],
    output:
        REPORT_OUTPUTS,
        directory(paths.REPORT_FIGURES),
    params:
        study=STUDY,
    log:
        "logs/report.log",
    shell:
        "{VAEBENCH} report --params {STUDY_FILE} 2> {log}"
