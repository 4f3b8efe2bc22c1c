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
        dag.REPORT_OUTPUTS,
