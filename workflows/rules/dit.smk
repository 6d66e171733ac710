# Three-stage DiT curriculum per training experiment (PAPER.md section 5, Table 4):
#   stage 1 images -> stage 2 low-res video -> stage 3 high-res video; each resumes from the previous stage.
#   With train.share_image_stage (tiny profile) the ablations whose image stage is the same computation as
#   pyramid's start from pyramid's (PLAN.stage_done).
# Outputs of a stage: {RES}/{experiment}/dit/{stage}/done.json (checkpoints beside it are kept on failure,
# so a rerun resumes; they are not declared outputs for that reason).


rule train_dit:
    input:
        latents=lambda wc: f"{RES}/latents/{wc.stage}/index.json",
        vae=f"{RES}/vae/final/normalization.json",
        probe=f"{RES}/probe/probe.json",  # FID-vs-compute points during training
        previous=lambda wc: PLAN.previous_stage(wc.experiment, wc.stage),
    output:
        done=f"{RES}/{{experiment}}/dit/{{stage}}/done.json",
    params:
        stage=lambda wc: PLAN.stage_cfg(wc.stage),
        model=PLAN.section("model"),
        pyramid=PLAN.section("pyramid"),
        train=PLAN.train_cfg(),
        experiment=lambda wc: PLAN.experiment_overrides(wc.experiment),
        launch=lambda wc, resources: PLAN.launcher(resources),
    wildcard_constraints:
        experiment="|".join(TRAINED),
        stage="|".join(CURRICULUM),
    threads: PLAN.compute("cpus_per_job", 2)
    resources:
        mem_mb=PLAN.compute("mem_mb", 4000),
        runtime=PLAN.compute("runtime_min", 60),
        gpus=PLAN.compute("gpus_per_job", 0),
        nodes=PLAN.compute("nodes", 1),
    log:
        f"{RES}/logs/train_dit/{{experiment}}_{{stage}}.log",
    benchmark:
        f"{RES}/benchmarks/train_dit_{{experiment}}_{{stage}}.tsv"
    conda:
        ENV
    shell:
        f"{{params.launch}} train-dit --profile {PROFILE} --experiment {{wildcards.experiment}} --stage {{wildcards.stage}} "
        f"--threads {{threads}} > {{log}} 2>&1"


rule fid_curve:
    """One FID-vs-compute curve per experiment across the three curriculum stages."""
    input:
        lambda wc: PLAN.stages_done(wc.experiment),
    output:
        f"{RES}/{{experiment}}/fid_curve.csv",
    wildcard_constraints:
        experiment="|".join(TRAINED),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        f"{RES}/logs/fid_curve/{{experiment}}.log",
    benchmark:
        f"{RES}/benchmarks/fid_curve_{{experiment}}.tsv"
    conda:
        ENV
    shell:
        f"pyramid-repro train-dit --profile {PROFILE} --experiment {{wildcards.experiment}} --collect-fid-curve "
        f"--out {{output}} > {{log}} 2>&1"
