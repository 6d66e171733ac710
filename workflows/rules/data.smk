# Dataset for the active profile: the synthetic world (or a checked copy of a real-data manifest).


rule make_dataset:
    output:
        manifest=f"{RES}/data/manifest.csv",
        info=f"{RES}/data/dataset.json",
    params:
        data=PLAN.section("data"),
        seed=CFG["seed"],
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        f"{RES}/logs/make_dataset.log",
    benchmark:
        f"{RES}/benchmarks/make_dataset.tsv"
    conda:
        ENV
    shell:
        f"pyramid-repro make-dataset --profile {PROFILE} --out $(dirname {{output.manifest}}) > {{log}} 2>&1"
