# One rule per stage of vaebench.dag.STAGES (prepare -> classifier -> fid_reference, train -> evaluate -> report):
# inputs, outputs, tracked params slices, threads, resources and command all come from the declaration,
# the same one dvc.yaml is generated from, so the two engines cannot drift apart.
# Outputs a stage declares in `report` (sample grids, reconstructions, curve figures, the HTML report) carry
# their caption and category into `snakemake --report` (stage_outputs in common.smk).
for _stage in STAGES.values():

    rule:
        name:
            _stage.name
        input:
            unpack(stage_inputs(_stage.name)),
        output:
            **stage_outputs(_stage.name),
        params:
            **stage_params(_stage.name),
        threads: _stage.threads
        priority: _stage.priority
        resources:
            **stage_resources(_stage.name),
        log:
            in_study(_stage.log()),
        benchmark:
            # wall time and peak resident memory (max_rss, MB) of every job, to check mem_mb against
            in_study(_stage.benchmark()),
        shell:
            # Evaluated twice: when the rule is defined (the printed command) and when a job runs, after
            # the loop has moved on; then the job's own rule name is in scope and picks the stage.
            stage_shell(locals().get("rule", _stage.name))
