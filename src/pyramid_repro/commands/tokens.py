"""`pyramid-repro tokens`: the token arithmetic of docs/method.md §4 under a profile's schedule.

Prints tokens per latent frame, the full-sequence token count of a clip, the pyramid's expected tokens per
training sample (stage sampled with the profile's weights, history compressed by the temporal pyramid) and per
generated video, and the reduction against the paper's ">85%" claim. Pure arithmetic from flow/cost.py.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from pyramid_repro.cliutil import add_config_args, config_from_args
from pyramid_repro.config import Config
from pyramid_repro.flow.cost import PAPER_CLAIM_PERCENT, TokenReport, token_report

__all__ = ["PAPER_CLAIM_PERCENT", "TokenReport", "main", "token_report"]

def _print(r: TokenReport, cfg: Config) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Token arithmetic, profile '{r.profile}' ({r.seconds:g} s, {r.pixel_frames} frames)")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("latent frame (h x w)", f"{r.latent_height} x {r.latent_width}")
    t.add_row(f"tokens per latent frame (patch {cfg.model.patch_size})", f"{r.tokens_per_frame}")
    t.add_row("tokens per frame at each pyramid stage", " / ".join(map(str, r.stage_tokens)))
    t.add_row("latent frames", f"{r.latent_frames}")
    t.add_row("full-sequence tokens per training sample", f"{r.fullseq_tokens}")
    weights = cfg.pyramid.stage_weights or [1.0] * cfg.pyramid.stages
    t.add_row(f"pyramid tokens per training sample (expected, stage weights {weights})", f"{r.pyramid_tokens:.0f}")
    t.add_row("training-token reduction", f"{r.reduction_percent:.1f}% (paper: >{PAPER_CLAIM_PERCENT:.0f}%)")
    t.add_row("generation: full-sequence tokens (CFG, all Euler steps)", f"{r.gen_fullseq_tokens:,}")
    t.add_row("generation: pyramid tokens", f"{r.gen_pyramid_tokens:,}")
    t.add_row("generation: pyramid tokens with history KV cache", f"{r.gen_pyramid_tokens_kv:,}")
    Console().print(t)
    verdict = "consistent with" if r.reduction_percent > PAPER_CLAIM_PERCENT else "BELOW"
    print(f"full-sequence tokens: {r.fullseq_tokens}")
    print(f"pyramid reduction: {r.reduction_percent:.1f}% — {verdict} the paper's >{PAPER_CLAIM_PERCENT:.0f}% claim")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyramid-repro tokens",
        description="Token arithmetic of docs/method.md §4: tokens per latent frame, full-sequence vs pyramid "
        "tokens per training sample and per generated video, and the reduction vs the paper's >85%% claim. "
        "Example: pyramid-repro tokens --profile paper --seconds 10  (prints 119040 full-sequence tokens).",
    )
    add_config_args(ap)
    ap.add_argument("--seconds", type=float, help="clip length in seconds (default: the profile's data.frames)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON instead of a table")
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    r = token_report(cfg, args.seconds)
    if args.json:
        print(json.dumps(asdict(r), indent=2))
    else:
        _print(r, cfg)
    return 0
