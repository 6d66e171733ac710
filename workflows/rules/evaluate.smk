# Scoring: the probe network (offline backends) and one metrics JSON per experiment and backend.
# Assumes the Snakefile defines PLAN (section/compute helpers), CFG, PROFILE, RES, ENV, EXPERIMENTS, SUITE
# (= eval.suite) and BACKENDS (= eval.backends); the sample rule writes {RES}/{experiment}/samples/{SUITE}/ with
# samples.json. Only the offline backends need the probe; it is an input of every score job (cheap, trained once).


rule train_probe:
    input:
        manifest=f"{RES}/data/manifest.csv",
    output:
        info=f"{RES}/probe/probe.json",
        weights=f"{RES}/probe/probe.safetensors",
        real_stats=f"{RES}/probe/real_stats.npz",
    params:
        data=PLAN.section("data"),
        steps=CFG["eval"]["probe_steps"],
    threads: PLAN.compute("cpus_per_job", 2)
    resources:
        mem_mb=PLAN.compute("mem_mb", 4000),
        runtime=30,  # minutes; ~1.5 on 2 cores at the tiny profile
    conda:
        ENV
    log:
        f"{RES}/logs/train_probe.log",
    benchmark:
        f"{RES}/benchmarks/train_probe.tsv"
    shell:
        f"pyramid-repro train-probe --profile {PROFILE} --threads {{threads}} > {{log}} 2>&1"


rule score:
    input:
        samples=f"{RES}/{{experiment}}/samples/{SUITE}/samples.json",
        probe=f"{RES}/probe/probe.json",
        weights=f"{RES}/probe/probe.safetensors",
    output:
        f"{RES}/{{experiment}}/metrics/{{backend}}.json",
    params:
        eval=PLAN.section("eval"),
    wildcard_constraints:
        experiment="|".join(EXPERIMENTS),
        backend="|".join(BACKENDS),
    threads: PLAN.compute("cpus_per_job", 2)
    resources:
        mem_mb=PLAN.compute("mem_mb", 4000),
        runtime=30,
        gpus=1 if "vbench" in BACKENDS else 0,
    conda:
        ENV
    log:
        f"{RES}/logs/score/{{experiment}}_{{backend}}.log",
    benchmark:
        f"{RES}/benchmarks/score_{{experiment}}_{{backend}}.tsv"
    shell:
        f"pyramid-repro score --profile {PROFILE} --experiment {{wildcards.experiment}} --backend {{wildcards.backend}} "
        f"--threads {{threads}} > {{log}} 2>&1"
