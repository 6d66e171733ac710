"""`pyramid-repro make-dataset`: render the synthetic world to disk, or check a real-data manifest and write a
checked copy (data/build.py does the work)."""

from __future__ import annotations

from pathlib import Path

from pyramid_repro.cliutil import config_from_args, config_parser
from pyramid_repro.data.build import build_synthetic, check_real_manifest
from pyramid_repro.provenance import atomic_write_bytes, provenance, write_json


def main(argv: list[str] | None = None) -> int:
    ap = config_parser(
        "make-dataset",
        "Render the profile's synthetic video world (clips + still images + manifest.csv), or, with "
        "data.source=manifest, check a real-data manifest and write a checked copy.",
    )
    ap.add_argument("--out", help="output folder (default: results/<profile>/data)")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: up to 2)")
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    out = Path(args.out or cfg.layout.data())
    out.mkdir(parents=True, exist_ok=True)
    if cfg.data.source == "manifest":
        df, bad = check_real_manifest(cfg)
        src = Path(cfg.data.manifest).resolve().parent
        df = df.assign(path=[str(src / p) for p in df["path"]])
        info = {"source": "manifest", "manifest": str(cfg.data.manifest), "rows": len(df), "bad_rows": bad}
    else:
        df = build_synthetic(cfg, out, args.workers)
        info = {"source": "synthetic", "rows": len(df), "counts": df.groupby(["kind", "split"]).size().to_dict()}
    atomic_write_bytes(out / "manifest.csv", df.to_csv(index=False).encode())
    info = {k: str(v) if isinstance(v, dict) else v for k, v in info.items()}
    write_json(out / "dataset.json", {**provenance(cfg), **info})
    skipped = f" ({len(info['bad_rows'])} bad row(s) skipped, listed in dataset.json)" if info.get("bad_rows") else ""
    print(f"wrote {len(df)} rows to {out / 'manifest.csv'}{skipped}")
    return 0
