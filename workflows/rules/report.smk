# Reports: every experiment's metrics (each backend) and FID curves -> tables, plots and the GPU-hour audit, into
# the profile's reports folder (PLAN.paths.reports: reports/ for the default profile, reports/<profile>/ else).
# One job writes them all (they share the inputs and take seconds), so `snakemake reports/table1.pdf` builds every
# report; its outputs are PLAN.report_outputs() (table6 only with an EvalCrafter backend). The metrics and curves
# come from `input:`; the GPU-hour audit also reads every ledger of the run and the benchmark files, which no rule
# declares (see dit.smk), so it takes them from the layout (PLAN.paths.ledger_glob). With train.seeds > 1 every
# experiment's runs are trained, sampled and scored (PLAN.runs), the claims are decided across them, and the reports
# go to a seeds_<N>/ folder of their own (layout.Layout.of).


rule report:
    input:
        metrics=[PLAN.paths.metrics(e, b) for e in EXPERIMENTS for b in BACKENDS],
        fid=[PLAN.paths.fid_curve(e) for e in TRAINED],
        vae_eval=PLAN.paths.vae_eval(),
        # train.seeds > 1: the other training runs' metrics and curves, which the claims read through the layout
        # (the tables show run 0)
        seed_runs=PLAN.seed_run_inputs(),
    output:
        **{k: report(v, caption=str(Path(workflow.basedir) / "workflows" / "report" / f"{k}.rst"),
                     category=REPORT_CATEGORIES.get(k, "Data"))
           if k in REPORT_CATEGORIES else v for k, v in PLAN.report_outputs().items()},
    params:
        eval=PLAN.section("eval"),
        out=lambda wc, output: Path(output.table1_pdf).parent,
    threads: 1
    resources:
        **PLAN.resources(cpus=1, mem_mb=2000, runtime=10),
    conda:
        ENV
    log:
        PLAN.paths.logs("report.log"),
    benchmark:
        PLAN.paths.benchmarks("report.tsv")
    shell:
        f"pyramid-repro report --profile {PROFILE} --out {{params.out}} --metrics {{input.metrics:q}} "
        f"--fid-curves {{input.fid:q}} > {{log}} 2>&1"
