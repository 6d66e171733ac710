"""Where the memory plan's activation bytes go (docs/design.md §8), measured on the meta device in seconds:

    python benchmarks/plan_breakdown.py                              # paper profile, 768p image stage
    python benchmarks/plan_breakdown.py --stage video_highres --draws

1. per op: the tensors one transformer block saves for backward at the stage's worst draw (micro-batch 1), by
   the aten op that made them and their dtype, in bytes per video token and in "hidden units" (bytes per token /
   (2 x hidden size): how many bf16 vectors of the hidden size a token keeps per block), under the trainer's
   setting (CUDA bf16 autocast, the configured attention kernel) beside the same model cast to bf16 without
   autocast. A textbook transformer block with a flash kernel keeps about 16 hidden units per token (Korthikanti
   et al. 2022, 34 sbh bytes with dropout masks, no attention matrix); the lines say which ops keep more here.
2. `--draws`: the activations of one sample of each (pyramid stage, latent frame) draw of the stage (every third
   frame), to set beside a GPU's measured peak of a few training steps at random draws.

Runs the real forward of the profile's DiT on the meta device through the plan's own census (train/plan.py), with
`--depth` blocks (all blocks of a DiT are alike; the per-block figure does not depend on the depth).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyramid_repro.config import load_config
from pyramid_repro.flow import cost
from pyramid_repro.train import plan as P
from pyramid_repro.train.dit import flow_matching_loss


class _Producers(TorchDispatchMode):
    """Records, for every storage an op creates, the op's name and the tensor's dtype."""

    def __init__(self):
        super().__init__()
        self.made: dict[int, tuple[str, str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in P._tensors(out if isinstance(out, (list, tuple)) else [out]):
            self.made.setdefault(P.storage_key(t), (func.overloadpacket.__name__, str(t.dtype).removeprefix("torch.")))
        return out


def block_saves(cfg, stage, draw, mode: str) -> tuple[collections.Counter, int, int]:
    """({(op, dtype): bytes} saved by the second block of the first block list, its total, video tokens) for one
    sample of `draw`; `mode` "autocast" (the trainer on CUDA) or "bf16" (the model cast to bf16, no autocast)."""
    model = P.meta_dit(cfg)
    kernel = P._kernel(cfg, "cuda")
    target = P._TargetEmulation("cuda", kernel, torch.bfloat16 if mode == "autocast" else None)
    b, text, full = P.dit_batch(cfg, stage, 1, draw)
    if mode == "bf16":
        model = model.to(torch.bfloat16)

        def cast(t):
            return t.to(torch.bfloat16) if t.is_floating_point() else t

        b = dataclasses.replace(b, history=[cast(h) for h in b.history], current=cast(b.current),
                                target=cast(b.target))
        text = type(text)(cast(text.tokens), text.mask, cast(text.pooled))
    before = model.attention_kernel
    model.attention_kernel = "sdpa"  # a dense mask on meta; the emulation keeps what `kernel` keeps
    rec = _Producers()
    try:
        with target, rec:
            c = P.census(lambda: flow_matching_loss(model, b, text, full), model,
                         exclude=lambda t: P.storage_key(t) in target.copies)
    finally:
        model.attention_kernel = before
        if mode == "bf16":
            P._MODELS.clear()  # the cached model was cast: build it again for the next caller
    saved = c.saved[0][1]
    by_op: collections.Counter = collections.Counter()
    for k in saved:
        by_op[rec.made.get(k, ("(block input)", "-"))] += c.nbytes[k]
    T, h, w = P.latent_shape(cfg, stage)
    tokens = cost.draw_video_tokens(draw, T, h, w, cfg.model.patch_size, cfg.pyramid)
    return by_op, sum(by_op.values()), tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--experiment", default="pyramid")
    ap.add_argument("--stage", default="image", help="curriculum stage name (default image)")
    ap.add_argument("--depth", type=int, default=2, help="blocks built (default 2; the figures are per block)")
    ap.add_argument("--draws", action="store_true", help="also every third (stage, frame) draw of the stage")
    args = ap.parse_args()
    cfg = load_config(args.profile, {"model": {"depth": args.depth}}, args.experiment)
    stage = next((s for s in cfg.train.curriculum if s.name == args.stage), None)
    if stage is None:
        raise SystemExit(f"--stage {args.stage}: the {args.profile} profile has "
                         f"{', '.join(s.name for s in cfg.train.curriculum)}")
    draw, _, _ = P.worst_draw(cfg, stage)
    hidden = cfg.model.hidden_size
    for mode in ("autocast", "bf16"):
        by_op, total, tokens = block_saves(cfg, stage, draw, mode)
        unit = tokens * 2 * hidden
        print(json.dumps({"check": "block_saves", "profile": args.profile, "stage": stage.name, "draw": draw,
                          "mode": mode, "kernel": P._kernel(cfg, "cuda"), "video_tokens": tokens,
                          "bytes_per_token": round(total / tokens), "hidden_units": round(total / unit, 2)}))
        for (op, dtype), n in by_op.most_common():
            if n / unit >= 0.05:
                print(f"    {op:28s} {dtype:9s} {n / unit:6.2f} hidden units")
    if args.draws:
        T, h, w = P.latent_shape(cfg, stage)
        full = load_config(args.profile, None, args.experiment)
        fst = next(s for s in full.train.curriculum if s.name == args.stage)
        kernel = P._kernel(full, "cuda")
        draws = [(0, 0)] if full.pyramid.stages == 1 else [
            (k, j) for k in range(full.pyramid.stages) for j in range(0, T, 3)]
        for d in draws:
            c, _ = P.dit_census(full, fst, 1, d, "cuda", kernel)
            print(json.dumps({"check": "draw_activations", "stage": fst.name, "draw": d,
                              "video_tokens": cost.draw_video_tokens(d, T, h, w, full.model.patch_size, full.pyramid),
                              "activations_gib": round(c.total() / 2**30, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
