# Causal video VAE: train -> evaluate (PSNR/SSIM) -> encode the latent cache of every curriculum stage.


rule train_vae:
    input:
        manifest=f"{RES}/data/manifest.csv",
    output:
        norm=f"{RES}/vae/final/normalization.json",
    params:
        vae=section("vae"),
        data=section("data"),
    threads: compute("cpus_per_job", 2)
    resources:
        mem_mb=compute("mem_mb", 4000),
        runtime=compute("runtime_min", 60),
        gpus=compute("gpus_per_job", 0),
    log:
        f"{RES}/logs/train_vae.log",
    benchmark:
        f"{RES}/benchmarks/train_vae.tsv"
    shell:
        "pyramid-repro train-vae {CONFIG_ARGS} --threads {threads} > {log} 2>&1"


rule eval_vae:
    input:
        norm=f"{RES}/vae/final/normalization.json",
    output:
        f"{RES}/vae/eval.json",
    params:
        vae=section("vae"),
    threads: compute("cpus_per_job", 2)
    resources:
        mem_mb=compute("mem_mb", 4000),
        runtime=30,
    log:
        f"{RES}/logs/eval_vae.log",
    benchmark:
        f"{RES}/benchmarks/eval_vae.tsv"
    shell:
        "pyramid-repro eval-vae {CONFIG_ARGS} --threads {threads} > {log} 2>&1"


rule encode_latents:
    input:
        norm=f"{RES}/vae/final/normalization.json",
    output:
        [f"{RES}/latents/{s}/index.json" for s in CURRICULUM],
    params:
        curriculum=section("train", "curriculum"),
    threads: compute("cpus_per_job", 2)
    resources:
        mem_mb=compute("mem_mb", 4000),
        runtime=compute("runtime_min", 60),
        gpus=min(1, compute("gpus_per_job", 0)),
    log:
        f"{RES}/logs/encode_latents.log",
    benchmark:
        f"{RES}/benchmarks/encode_latents.tsv"
    shell:
        "pyramid-repro encode-latents {CONFIG_ARGS} --threads {threads} > {log} 2>&1"
