# Three-stage DiT curriculum per training experiment (docs/method.md §5, arXiv Table 4):
#   stage 1 images -> stage 2 low-res video -> stage 3 high-res video; each resumes from the previous stage.
#   With train.share_image_stage (tiny profile) the ablations whose image stage is the same computation as
#   pyramid's start from pyramid's (PLAN.stage_done).
# A stage's checkpoints/, ledger.csv and fid_snapshots/ are deliberately not outputs: Snakemake deletes declared
# outputs before rerunning a job, and a rerun resumes from the checkpoints and keeps the ledger rows and FID
# snapshots of earlier attempts.
# FID-vs-compute points (paper Sec. 5, Fig. 5-6 analogue): train_dit only saves the EMA weights at the stage's
# FID-point steps (<stage>/fid_snapshots/); fid_points samples and scores them with the probe off the training
# job's critical path, and fid_curve joins the stages' fid.csv files.


rule train_dit:
    input:
        latents=lambda wc: PLAN.paths.latents(wc.stage),
        vae=PLAN.vae_input(),
        previous=lambda wc: PLAN.previous_stage(wc.experiment, wc.stage),
    output:
        done=PLAN.paths.stage_done("{experiment}", "{stage}"),
        **PLAN.stage_outputs("{experiment}", "{stage}"),
    params:
        stage=lambda wc: PLAN.stage_cfg(wc.stage),
        model=PLAN.section("model"),
        pyramid=PLAN.section("pyramid"),
        train=PLAN.train_cfg(),
        experiment=lambda wc: PLAN.experiment_overrides(wc.experiment),
        release=PLAN.release_cfg(),
        launch=lambda wc, resources: PLAN.launcher(resources),
        proc_threads=lambda wc, resources: PLAN.process_threads(resources),
    wildcard_constraints:
        experiment=PLAN.run_pattern(PLAN.all_trained),
        stage="|".join(CURRICULUM),
    threads: PLAN.compute("cpus_per_job")
    priority: lambda wc: PLAN.training_priority(wc.experiment)
    resources:
        **PLAN.training_resources(),
    log:
        PLAN.paths.logs("train_dit", "{experiment}_{stage}.log"),
    benchmark:
        PLAN.paths.benchmarks("train_dit_{experiment}_{stage}.tsv")
    conda:
        ENV
    shell:
        f"{{params.launch}} train-dit --profile {PROFILE} --experiment {{wildcards.experiment}} --stage {{wildcards.stage}} "
        f"--out $(dirname {{output.done}}) --threads {{params.proc_threads}} > {{log}} 2>&1"


rule fid_points:
    """A stage's FID points from its snapshots: fid.csv and fid_points/step_<n>.npz (features + captions)."""
    input:
        done=PLAN.paths.stage_done("{experiment}", "{stage}"),  # and the fid_snapshots/ it finished
        probe=PLAN.paths.probe_info(),
        vae=PLAN.vae_input(),
    output:
        PLAN.paths.stage_fid("{experiment}", "{stage}"),
    params:
        fid=PLAN.fid_cfg(),
        release=PLAN.release_cfg(),
    wildcard_constraints:
        experiment=PLAN.run_pattern(PLAN.all_trained),
        stage="|".join(CURRICULUM),
    threads: PLAN.compute("cpus_per_job")
    resources:
        **PLAN.gpu_resources(),
    log:
        PLAN.paths.logs("fid_points", "{experiment}_{stage}.log"),
    benchmark:
        PLAN.paths.benchmarks("fid_points_{experiment}_{stage}.tsv")
    conda:
        ENV
    shell:
        f"pyramid-repro fid-points --profile {PROFILE} --experiment {{wildcards.experiment}} --stage {{wildcards.stage}} "
        f"--out $(dirname {{output}}) --threads {{threads}} > {{log}} 2>&1"


rule fid_curve:
    """One FID-vs-compute curve per experiment across the three curriculum stages."""
    input:
        lambda wc: PLAN.fid_curve_inputs(wc.experiment),
    output:
        PLAN.paths.fid_curve("{experiment}"),
    wildcard_constraints:
        experiment=PLAN.run_pattern(PLAN.all_trained),
    threads: 1
    resources:
        **PLAN.resources(cpus=1, mem_mb=1000, runtime=5),
    log:
        PLAN.paths.logs("fid_curve", "{experiment}.log"),
    benchmark:
        PLAN.paths.benchmarks("fid_curve_{experiment}.tsv")
    conda:
        ENV
    shell:
        f"pyramid-repro train-dit --profile {PROFILE} --experiment {{wildcards.experiment}} --collect-fid-curve "
        f"--out {{output}} > {{log}} 2>&1"
