# Sampling of the prompt suite from each experiment's final checkpoint (inference-only ablations reuse the
# checkpoint of `checkpoint_from`, e.g. no_corrective_noise samples the `pyramid` weights).


rule sample:
    input:
        checkpoint=lambda wc: PLAN.final_checkpoint(wc.experiment),
        vae=f"{RES}/vae/final/normalization.json",
    output:
        f"{RES}/{{experiment}}/samples/{SUITE}/samples.json",
    params:
        suite=SUITE,
        pyramid=PLAN.section("pyramid"),
        eval=PLAN.section("eval"),
        experiment=lambda wc: PLAN.experiment_overrides(wc.experiment),
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
    threads: PLAN.compute("cpus_per_job", 2)
    resources:
        mem_mb=PLAN.compute("mem_mb", 4000),
        runtime=PLAN.compute("runtime_min", 60),
        gpus=min(1, PLAN.compute("gpus_per_job", 0)),
    log:
        f"{RES}/logs/sample/{{experiment}}.log",
    benchmark:
        f"{RES}/benchmarks/sample_{{experiment}}.tsv"
    conda:
        ENV
    shell:
        f"pyramid-repro sample --profile {PROFILE} --experiment {{wildcards.experiment}} --suite {{params.suite}} "
        f"--threads {{threads}} > {{log}} 2>&1"
