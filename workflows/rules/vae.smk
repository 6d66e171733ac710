# Causal video VAE: train -> evaluate (PSNR/SSIM) -> encode the latent cache of every curriculum stage.
# Fine-tuning a release (`release` set): no VAE is trained; eval_vae measures the release's VAE on the run's held-out
# clips and encode_latents encodes with it (PLAN.vae_input: their input is the release's causal_video_vae/config.json).
# train_vae's checkpoints/ and ledger.csv are deliberately not outputs (PLAN.vae_outputs says why).


rule train_vae:
    input:
        manifest=PLAN.paths.manifest(),
    output:
        norm=PLAN.paths.vae_normalization(),
        **PLAN.vae_outputs(),
    params:
        vae=PLAN.section("vae"),
        data=PLAN.section("data"),
        out=lambda wc, output: Path(output.norm).parent.parent,
        launch=lambda wc, resources: PLAN.launcher(resources),
        proc_threads=lambda wc, resources: PLAN.process_threads(resources),
    threads: PLAN.vae_cpus()
    # first when it competes with train_probe for the cores: every DiT job waits for it
    priority: 10
    resources:
        **PLAN.training_resources(multi_node=False),
    log:
        PLAN.paths.logs("train_vae.log"),
    benchmark:
        PLAN.paths.benchmarks("train_vae.tsv")
    conda:
        ENV
    shell:
        f"{{params.launch}} train-vae --profile {PROFILE} --out {{params.out}} --threads {{params.proc_threads}} > {{log}} 2>&1"


rule eval_vae:
    input:
        norm=PLAN.vae_input(),
        manifest=PLAN.paths.manifest(),  # the clips (with `release` no train_vae job stands between)
    output:
        eval=PLAN.paths.vae_eval(),
        grid=PLAN.paths.vae_reconstructions(),
    params:
        vae=PLAN.section("vae"),
        release=PLAN.release_cfg(),
        which=PLAN.eval_vae_args(),
    threads: PLAN.compute("cpus_per_job")
    resources:
        **PLAN.gpu_resources(runtime=30),
    log:
        PLAN.paths.logs("eval_vae.log"),
    benchmark:
        PLAN.paths.benchmarks("eval_vae.tsv")
    conda:
        ENV
    shell:
        f"pyramid-repro eval-vae --profile {PROFILE} {{params.which}} --out $(dirname {{output.eval}}) --threads {{threads}} > {{log}} 2>&1"


rule encode_latents:
    input:
        norm=PLAN.vae_input(),
        manifest=PLAN.paths.manifest(),  # the clips (with `release` no train_vae job stands between)
    output:
        [directory(PLAN.paths.latents(s)) for s in CURRICULUM],
    params:
        curriculum=PLAN.section("train", "curriculum"),
        release=PLAN.release_cfg(),
        out=lambda wc, output: Path(output[0]).parent,
    threads: PLAN.compute("cpus_per_job")
    resources:
        **PLAN.gpu_resources(),
    log:
        PLAN.paths.logs("encode_latents.log"),
    benchmark:
        PLAN.paths.benchmarks("encode_latents.tsv")
    conda:
        ENV
    shell:
        f"pyramid-repro encode-latents --profile {PROFILE} --out {{params.out}} --threads {{threads}} > {{log}} 2>&1"
