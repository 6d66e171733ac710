# Dataset for the active profile: the synthetic world (or a checked copy of a real-data manifest).
# Paths come from the run's layout (PLAN.paths, pyramid_repro/layout.py); every file the job writes is an output.


rule make_dataset:
    output:
        manifest=PLAN.paths.manifest(),
        info=PLAN.paths.dataset_info(),
        # the synthetic world's clips and still images (a real-data manifest points at the user's files)
        **({"videos": directory(f"{PLAN.paths.data()}/videos"), "images": directory(f"{PLAN.paths.data()}/images")}
           if PLAN.synthetic_data() else {}),
    params:
        data=PLAN.section("data"),
        seed=CFG["seed"],
    threads: 1
    resources:
        **PLAN.resources(cpus=1, mem_mb=4000, runtime=30),
    log:
        PLAN.paths.logs("make_dataset.log"),
    benchmark:
        PLAN.paths.benchmarks("make_dataset.tsv")
    conda:
        ENV
    shell:
        f"pyramid-repro make-dataset --profile {PROFILE} --out $(dirname {{output.manifest}}) > {{log}} 2>&1"
