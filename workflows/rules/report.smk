# Reports: every experiment's metrics (each backend) and FID curves -> tables, plots and the GPU-hour audit.


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
        fid=f"{REPORTS}/fid_convergence.pdf",
        ablations=f"{REPORTS}/ablations.pdf",
        gpu_hours=f"{REPORTS}/gpu_hours.pdf",
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
