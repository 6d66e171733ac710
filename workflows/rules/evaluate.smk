# Scoring: the probe network (offline backends) and one metrics JSON per experiment and backend.
# Assumes the Snakefile defines PLAN (paths, sections, compute helpers), CFG, PROFILE, ENV, EXPERIMENTS, SUITE
# (= eval.suite) and BACKENDS (= eval.backends). Only the offline backends need the probe; it is an input of every
# score job (cheap, trained once). The `vbench` backend runs VBench's own code in a separate environment
# (eval.vbench_env; docs/vbench.md says how to create it).


rule train_probe:
    input:
        manifest=PLAN.paths.manifest(),
    output:
        info=PLAN.paths.probe_info(),
        weights=PLAN.paths.probe_weights(),
        real_stats=PLAN.paths.probe_real_stats(),
    params:
        data=PLAN.section("data"),
        steps=CFG["eval"]["probe_steps"],
    threads: PLAN.probe_cpus()
    # before the DiT stages that are ready beside it (priority 8 and 5): every sample, score and FID-point job
    # waits for the probe, so it should not be left to the end of the run
    priority: 9
    resources:
        **PLAN.gpu_resources(runtime=30),  # minutes; 2.8 measured on 2 cores at the tiny profile
    conda:
        ENV
    log:
        PLAN.paths.logs("train_probe.log"),
    benchmark:
        PLAN.paths.benchmarks("train_probe.tsv")
    shell:
        f"pyramid-repro train-probe --profile {PROFILE} --out $(dirname {{output.info}}) --threads {{threads}} "
        f"> {{log}} 2>&1"


rule score:
    input:
        samples=PLAN.paths.samples_index("{experiment}", SUITE),
        probe=PLAN.paths.probe_info(),
        weights=PLAN.paths.probe_weights(),
    output:
        PLAN.paths.metrics("{experiment}", "{backend}"),
    params:
        eval=PLAN.section("eval"),
    wildcard_constraints:
        experiment=PLAN.run_pattern(PLAN.all_experiments),
        backend="|".join(BACKENDS),
    threads: PLAN.compute("cpus_per_job")
    resources:
        **PLAN.resources(gpus=PLAN.score_gpus(), runtime=30),  # a GPU when a backend needs one (backend_specs)
    conda:
        ENV
    log:
        PLAN.paths.logs("score", "{experiment}_{backend}.log"),
    benchmark:
        PLAN.paths.benchmarks("score_{experiment}_{backend}.tsv")
    shell:
        f"pyramid-repro score --profile {PROFILE} --experiment {{wildcards.experiment}} --backend {{wildcards.backend}} "
        f"--out {{output}} --threads {{threads}} > {{log}} 2>&1"
