# The user study (`pyramid-repro study`, docs/user_study.md): the report of a study from its database, named after
# the study (layout.USER_STUDY_REPORT_FILES). Not part of `rule all`: the study needs raters to have voted first, so
# ask for the report of the study by its file name, e.g. for the study `pilot` of the default profile:
#   snakemake --cores 1 reports/user_study_pilot.pdf
# (another profile: --config profile=smoke -- reports/smoke/user_study_pilot.pdf). Votes reach study.sqlite itself
# at SQLite's WAL checkpoints, so a report after new votes may need --forcerun user_study_report.
from pyramid_repro.layout import STUDY_NAME, USER_STUDY_REPORT_FILES


rule user_study_report:
    input:
        db=PLAN.paths.study_db("{study}"),
    output:
        **{f.rsplit(".", 1)[1]: PLAN.paths.report(f) for f in USER_STUDY_REPORT_FILES},
    wildcard_constraints:
        study=STUDY_NAME,
    params:
        out=lambda wc, output: Path(output.pdf).parent,
    threads: 1
    resources:
        **PLAN.resources(cpus=1, mem_mb=2000, runtime=10),
    conda:
        ENV
    log:
        PLAN.paths.logs("user_study_report_{study}.log"),
    shell:
        f"pyramid-repro study report --profile {PROFILE} --name {{wildcards.study}} --out {{params.out}} > {{log}} 2>&1"
