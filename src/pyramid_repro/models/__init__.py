"""MM-DiT and text encoders (docs/method.md §3-§4). Knows tokens, not time schedules.

Public API: PyramidDiT (this suite's model) and OfficialPyramidDiT (the authors' release), both diffusers
ModelMixins with forward(history, current, timestep, tokens, text_mask, pooled, full_size) -> velocity of current
(the contract: models/base.py); build_dit(cfg, text_dim, pooled_dim), load_dit(folder, device) (either class, by
its config.json), build_text_encoder(cfg, device) with encode(prompts) -> (tokens, mask, pooled), .token_dim,
.pooled_dim, and encode_cached(encoder, prompts, path).
"""

from pyramid_repro.models.dit import PyramidDiT, build_dit
from pyramid_repro.models.official import OfficialPyramidDiT
from pyramid_repro.models.registry import load_dit
from pyramid_repro.models.text import build_text_encoder, encode_cached

__all__ = ["OfficialPyramidDiT", "PyramidDiT", "build_dit", "build_text_encoder", "encode_cached", "load_dit"]
