# Reports (issue G): every experiment's metrics (each backend) and FID curves -> tables, plots and the GPU-hour
# audit. One job writes them all (they share the inputs and take seconds), so `snakemake reports/table1.pdf`
# builds every report. Inputs assumed from the other rule files:
#   {RES}/{experiment}/metrics/{backend}.json  for every experiment x CFG["eval"]["backends"]   (evaluate.smk)
#   {RES}/{experiment}/fid_curve.csv           for every training experiment (TRAINED)           (dit.smk)
#   {RES}/vae/eval.json                                                                           (vae.smk)
# Ledgers ({RES}/vae/ledger.csv, {RES}/{experiment}/dit/{stage}/ledger.csv) and benchmark files are written by
# those jobs as side effects and read with the glob {RES}/**/ledger*.csv. table6.pdf appears beside the others
# when an `evalcrafter` backend produced metrics.


rule report:
    input:
        metrics=[f"{RES}/{e}/metrics/{b}.json" for e in EXPERIMENTS for b in BACKENDS],
        fid=[f"{RES}/{e}/fid_curve.csv" for e in TRAINED],
        vae_eval=f"{RES}/vae/eval.json",
    output:
        table1=f"{REPORTS}/table1.pdf",
        table1_csv=f"{REPORTS}/table1.csv",
        table1_md=f"{REPORTS}/table1.md",
        table5=f"{REPORTS}/table5.pdf",
        table5_csv=f"{REPORTS}/table5.csv",
        fid=f"{REPORTS}/fid_convergence.pdf",
        ablations=f"{REPORTS}/ablations.pdf",
        gpu_hours=f"{REPORTS}/gpu_hours.pdf",
        gpu_hours_csv=f"{REPORTS}/gpu_hours.csv",
    params:
        eval=PLAN.section("eval"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    log:
        f"{RES}/logs/report.log",
    benchmark:
        f"{RES}/benchmarks/report.tsv"
    shell:
        f"pyramid-repro report --profile {PROFILE} --out $(dirname {{output.table1}}) > {{log}} 2>&1"
