# vaebench workflow: prepare -> classifier -> train -> evaluate -> report.
# Helpers, config validation and path templates are in workflow/rules/common.smk; the study file is
# params.yaml (or the one given with --configfile). The same DAG is defined for DVC in dvc.yaml.
include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        REPORT_OUTPUTS,
