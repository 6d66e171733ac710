# Sampling of the prompt suite from each experiment's final checkpoint (inference-only ablations reuse the
# checkpoint of `checkpoint_from`, e.g. no_corrective_noise samples the `pyramid` weights).
SUITE = CFG["eval"]["suite"]


def _final_checkpoint(wildcards):
    source = experiments()[wildcards.experiment].checkpoint_from
    return f"{RES}/{source}/dit/{CURRICULUM[-1]}/done.json"


rule sample:
    input:
        checkpoint=_final_checkpoint,
        vae=f"{RES}/vae/final/normalization.json",
    output:
        f"{RES}/{{experiment}}/samples/{SUITE}/samples.json",
    params:
        pyramid=section("pyramid"),
        eval=section("eval"),
        experiment=lambda wc: json.dumps(experiments()[wc.experiment].overrides, sort_keys=True),
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
    threads: compute("cpus_per_job", 2)
    resources:
        mem_mb=compute("mem_mb", 4000),
        runtime=compute("runtime_min", 60),
        gpus=min(1, compute("gpus_per_job", 0)),
    log:
        f"{RES}/logs/sample/{{experiment}}.log",
    benchmark:
        f"{RES}/benchmarks/sample_{{experiment}}.tsv"
    shell:
        "pyramid-repro sample {CONFIG_ARGS} --experiment {wildcards.experiment} --suite {SUITE} "
        "--threads {threads} > {log} 2>&1"
