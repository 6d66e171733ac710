# Sampling of the prompt suite from each experiment's final checkpoint (inference-only ablations reuse the
# checkpoint of `checkpoint_from`, e.g. no_corrective_noise samples the `pyramid` weights). The videos
# (<prompt>-<i>.mp4, as VBench names them; samples.json lists them) are not declared one by one: Snakemake keeps a
# job's provenance under file names derived from each output path, which long prompt texts overflow, and a job
# without provenance is no longer rerun when its parameters change.


rule sample:
    input:
        checkpoint=lambda wc: PLAN.final_checkpoint(wc.experiment),
        vae=PLAN.vae_input(),
    output:
        index=PLAN.paths.samples_index("{experiment}", SUITE),
        sheet=f"{PLAN.paths.samples('{experiment}', SUITE)}/contact_sheet.png",
    params:
        suite=SUITE,
        pyramid=PLAN.section("pyramid"),
        eval=PLAN.section("eval"),
        experiment=lambda wc: PLAN.experiment_overrides(wc.experiment),
        release=PLAN.release_cfg(),
    wildcard_constraints:
        experiment=PLAN.run_pattern(PLAN.all_experiments),
    threads: PLAN.compute("cpus_per_job")
    resources:
        **PLAN.gpu_resources(),
    log:
        PLAN.paths.logs("sample", "{experiment}.log"),
    benchmark:
        PLAN.paths.benchmarks("sample_{experiment}.tsv")
    conda:
        ENV
    shell:
        f"pyramid-repro sample --profile {PROFILE} --experiment {{wildcards.experiment}} --suite {{params.suite}} "
        f"--out $(dirname {{output.index:q}}) --threads {{threads}} > {{log}} 2>&1"
