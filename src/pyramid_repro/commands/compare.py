"""`pyramid-repro compare`: sample and score a new DiT checkpoint (or the authors' release) and set it against the
paper and this run's `pyramid` (report/compare.py does the work; this module is its command line)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyramid_repro.cliutil import config_from_args, config_parser
from pyramid_repro.commands.sample import add_method_args, add_release_args, check_release_only, release_plan
from pyramid_repro.config import ConfigError
from pyramid_repro.releases import RELEASES
from pyramid_repro.report.compare import compare


def main(argv: list[str] | None = None) -> int:
    ap = config_parser("compare",
                       "Sample and score a DiT checkpoint, then set it against the paper and "
                       "this run's pyramid (reports/compare_<name>.csv). The checkpoint may be the "
                       "authors' released Pyramid Flow folder, sampled with their official settings "
                       "(docs/release.md).")
    ap.add_argument("--checkpoint", type=Path, required=True,
                    help="folder with config.json (save_pretrained), sampled with its own method (the "
                    "train_config.yaml beside it), or the authors' release folder")
    ap.add_argument("--backend", default=None, help="scoring backend (default: the profile's first backend)")
    ap.add_argument("--name", help="label of the checkpoint in the table (default: folder name; a release: "
                    f"{', '.join(f'release-{k.folder_prefix}<resolution>' for k in RELEASES.values())})")
    ap.add_argument("--image", type=Path, help="image-to-video: this image is the first frame of every video")
    add_release_args(ap)
    add_method_args(ap)
    args = ap.parse_args(argv)
    rel = release_plan(args)
    check_release_only(args, rel)
    if rel is None and args.image is not None:
        raise ConfigError("--image: compare samples image-to-video only for the authors' release; use "
                          "`pyramid-repro sample --image` for a suite checkpoint")
    cfg = config_from_args(args)
    if rel is not None:
        print(f"comparing {rel.label}\n  {rel.preset.describe()}")
    table = compare(cfg, args.checkpoint, args.backend or cfg.eval.backends[0], args.name, release_run=rel,
                    experiment=args.experiment, override_method=args.override_method)
    t = Table(title=f"Checkpoint comparison (profile {cfg.profile})")
    shown = [c for c in table.columns if c != "settings"]
    for c in shown:
        t.add_column(str(c))
    for r in table[shown].itertuples(index=False):
        t.add_row(*["" if v is None or v != v else f"{v:.2f}" if isinstance(v, float) else str(v) for v in r])
    Console(width=200).print(t)
    for line in table.attrs.get("protocol_lines", []):
        print(f"protocol  {line}")
    name = table.attrs["name"]
    print(f"wrote {cfg.layout.report(f'compare_{name}.csv')} and {cfg.layout.report(f'compare_{name}.pdf')}")
    return 0
