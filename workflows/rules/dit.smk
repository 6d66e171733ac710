# Three-stage DiT curriculum per training experiment (PAPER.md section 5, Table 4):
#   stage 1 images -> stage 2 low-res video -> stage 3 high-res video; each resumes from the previous stage.
# Outputs of a stage: {RES}/{experiment}/dit/{stage}/done.json (checkpoints beside it are kept on failure,
# so a rerun resumes; they are not declared outputs for that reason).


def _stage_index(stage):
    return CURRICULUM.index(stage)


def _previous_stage(wildcards):
    i = _stage_index(wildcards.stage)
    return [] if i == 0 else [f"{RES}/{wildcards.experiment}/dit/{CURRICULUM[i - 1]}/done.json"]


def _stage_cfg(stage):
    return json.dumps(CFG["train"]["curriculum"][_stage_index(stage)], sort_keys=True)


def launcher(threads, resources):
    """CPU: run the command directly. GPUs: `accelerate launch` with processes/nodes from the resources."""
    gpus, nodes = int(resources.get("gpus", 0) or 0), int(resources.get("nodes", 1) or 1)
    if gpus <= 0:
        return "pyramid-repro"
    return (
        f"accelerate launch --num_processes {gpus * nodes} --num_machines {nodes} --mixed_precision bf16 "
        "-m pyramid_repro.cli"
    )


rule train_dit:
    input:
        latents=lambda wc: f"{RES}/latents/{wc.stage}/index.json",
        vae=f"{RES}/vae/final/normalization.json",
        probe=f"{RES}/probe/probe.json",  # FID-vs-compute points during training
        previous=_previous_stage,
    output:
        done=f"{RES}/{{experiment}}/dit/{{stage}}/done.json",
    params:
        stage=lambda wc: _stage_cfg(wc.stage),
        model=section("model"),
        pyramid=section("pyramid"),
        train=lambda wc: json.dumps({k: v for k, v in CFG["train"].items() if k != "curriculum"}, sort_keys=True),
        experiment=lambda wc: json.dumps(experiments()[wc.experiment].overrides, sort_keys=True),
        launch=lambda wc, threads, resources: launcher(threads, resources),
    wildcard_constraints:
        experiment="|".join(TRAINED),
        stage="|".join(CURRICULUM),
    threads: compute("cpus_per_job", 2)
    resources:
        mem_mb=compute("mem_mb", 4000),
        runtime=compute("runtime_min", 60),
        gpus=compute("gpus_per_job", 0),
        nodes=compute("nodes", 1),
    log:
        f"{RES}/logs/train_dit/{{experiment}}_{{stage}}.log",
    benchmark:
        f"{RES}/benchmarks/train_dit_{{experiment}}_{{stage}}.tsv"
    shell:
        "{params.launch} train-dit {CONFIG_ARGS} --experiment {wildcards.experiment} --stage {wildcards.stage} "
        "--threads {threads} > {log} 2>&1"


rule fid_curve:
    """One FID-vs-compute curve per experiment across the three curriculum stages."""
    input:
        lambda wc: [f"{RES}/{wc.experiment}/dit/{s}/done.json" for s in CURRICULUM],
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
    shell:
        "pyramid-repro train-dit {CONFIG_ARGS} --experiment {wildcards.experiment} --collect-fid-curve "
        "--out {output} > {log} 2>&1"
