# vaebench workflow: prepare -> classifier -> train -> evaluate -> report.
# workflow/rules/common.smk validates the study (params.yaml, or the file given with --configfile) and the
# model catalogue before any job runs; workflow/rules/stages.smk declares one rule per stage of
# vaebench.dag.STAGES, from which dvc.yaml is generated too.
include: "workflow/rules/common.smk"
include: "workflow/rules/stages.smk"

# `snakemake --report reports/snakemake.html` opens with workflow/report/workflow.rst and shows the outputs
# that dag.STAGES marks for it, with their captions (workflow/report/*.rst)
report: paths.WORKFLOW_DESCRIPTION


rule all:
    input:
        [in_study(p) for p in dag.REPORT_OUTPUTS],


onsuccess:
    print(f"vaebench: study {STUDY.name} is complete. Its report: {in_study(paths.REPORT_HTML)} (every study: "
          f"{paths.INDEX_HTML}, refreshed by `python -m vaebench readme`).\n"
          f"  snakemake --report {in_study(paths.SNAKEMAKE_REPORT)} --configfile {STUDY_FILE}\n"
          f"  dvc plots show {in_study(paths.REPORT_PLOTS)}; dvc metrics show {in_study(paths.REPORT_HEADLINE)}\n"
          f"  MLflow: the link printed at the start (experiment '{STUDY.name}', its Runs table)")
