"""MM-DiT and text encoders (docs/method.md §3-§4). Knows tokens, not time schedules.

Public API: PyramidDiT (diffusers ModelMixin; forward(history, current, timestep, tokens, text_mask, pooled,
full_size) -> velocity of current), build_dit(cfg, text_dim, pooled_dim), load_dit(folder, device),
build_text_encoder(cfg, device) with
encode(prompts) -> (tokens, mask, pooled), .token_dim, .pooled_dim, and encode_cached(encoder, prompts, path).
"""

from pyramid_repro.models.dit import PyramidDiT, build_dit, load_dit
from pyramid_repro.models.text import build_text_encoder, encode_cached

__all__ = ["PyramidDiT", "build_dit", "build_text_encoder", "encode_cached", "load_dit"]
