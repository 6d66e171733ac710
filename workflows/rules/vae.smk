# Causal video VAE: train -> evaluate (PSNR/SSIM) -> encode the latent cache of every curriculum stage.


rule train_vae:
    input:
        manifest=f"{RES}/data/manifest.csv",
    output:
        norm=f"{RES}/vae/final/normalization.json",
    params:
        vae=PLAN.section("vae"),
        data=PLAN.section("data"),
        launch=lambda wc, resources: PLAN.launcher(resources),
    threads: PLAN.compute("cpus_per_job", 2)
    resources:
        mem_mb=PLAN.compute("mem_mb", 4000),
        runtime=PLAN.compute("runtime_min", 60),
        gpus=PLAN.compute("gpus_per_job", 0),
    log:
        f"{RES}/logs/train_vae.log",
    benchmark:
        f"{RES}/benchmarks/train_vae.tsv"
    conda:
        ENV
    shell:
        f"{{params.launch}} train-vae --profile {PROFILE} --threads {{threads}} > {{log}} 2>&1"


rule eval_vae:
    input:
        norm=f"{RES}/vae/final/normalization.json",
    output:
        f"{RES}/vae/eval.json",
    params:
        vae=PLAN.section("vae"),
    threads: PLAN.compute("cpus_per_job", 2)
    resources:
        mem_mb=PLAN.compute("mem_mb", 4000),
        runtime=30,
    log:
        f"{RES}/logs/eval_vae.log",
    benchmark:
        f"{RES}/benchmarks/eval_vae.tsv"
    conda:
        ENV
    shell:
        f"pyramid-repro eval-vae --profile {PROFILE} --threads {{threads}} > {{log}} 2>&1"


rule encode_latents:
    input:
        norm=f"{RES}/vae/final/normalization.json",
    output:
        [f"{RES}/latents/{s}/index.json" for s in CURRICULUM],
    params:
        curriculum=PLAN.section("train", "curriculum"),
    threads: PLAN.compute("cpus_per_job", 2)
    resources:
        mem_mb=PLAN.compute("mem_mb", 4000),
        runtime=PLAN.compute("runtime_min", 60),
        gpus=min(1, PLAN.compute("gpus_per_job", 0)),
    log:
        f"{RES}/logs/encode_latents.log",
    benchmark:
        f"{RES}/benchmarks/encode_latents.tsv"
    conda:
        ENV
    shell:
        f"pyramid-repro encode-latents --profile {PROFILE} --threads {{threads}} > {{log}} 2>&1"
