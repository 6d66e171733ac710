# The user study (`pyramid-repro study`, docs/user_study.md): its report from the study database. Not part of
# `rule all`: the study needs raters to have voted first, so ask for it by name:
#   snakemake --cores 1 reports/user_study.pdf                      (study "user_study" of the default profile)
#   PYRAMID_REPRO_STUDY=pilot snakemake --cores 1 -- reports/user_study.pdf
# The study's name comes from the environment because the config schema admits no extra keys. Votes reach
# study.sqlite itself at SQLite's WAL checkpoints, so a report after new votes may need --forcerun user_study_report.
STUDY = os.environ.get("PYRAMID_REPRO_STUDY", "user_study")


rule user_study_report:
    input:
        db=PLAN.paths.study_db(STUDY),
    output:
        pdf=PLAN.paths.report("user_study.pdf"),
        csv=PLAN.paths.report("user_study.csv"),
        md=PLAN.paths.report("user_study.md"),
    params:
        out=lambda wc, output: Path(output.pdf).parent,
    threads: 1
    resources:
        **PLAN.resources(cpus=1, mem_mb=2000, runtime=10),
    conda:
        ENV
    log:
        PLAN.paths.logs("user_study_report.log"),
    shell:
        f"pyramid-repro study report --profile {PROFILE} --name {STUDY} --out {{params.out}} > {{log}} 2>&1"
