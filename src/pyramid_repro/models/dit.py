"""This suite's MM-DiT (docs/method.md §3-§4, §4.1): `PyramidDiT`, the SD3-style model of models/mmdit.py with
pyramid-aware conditioning and positions.

Where it differs from the authors' release (models/official.py, docs/method.md §3.6): the context (text + history)
is conditioned as clean (t = 0), so under the causal mask the history KV cache is exact; text tokens attend to
text only; spatial positions are 2D sin-cos of coordinates on the full-resolution patch grid (extrapolated for the
current stage, interpolated for history; models/positions.py).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config

from pyramid_repro.models.attention import set_kernel
from pyramid_repro.models.mmdit import MMDiT
from pyramid_repro.models.positions import spatial_embedding


class PyramidDiT(MMDiT):
    """Velocity model v(history, current, t, text); the token layout is models/mmdit.py's."""

    # written by the single class that held both models before OfficialPyramidDiT (always "suite", 0, 0 here)
    legacy_config_keys = ("variant", "pos_embed_max_size", "pos_embed_base_size")

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size: int = 2, hidden_size: int = 1536, depth: int = 24,
                 num_heads: int = 24, mlp_ratio: float = 4.0, qk_norm: bool = True, text_dim: int = 4096,
                 pooled_dim: int = 2048, causal: bool = True, qk_norm_eps: float = 1e-6):
        super().__init__(in_channels=in_channels, patch_size=patch_size, hidden_size=hidden_size, depth=depth,
                         num_heads=num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm, text_dim=text_dim,
                         pooled_dim=pooled_dim, qk_norm_eps=qk_norm_eps)

    @classmethod
    def check_legacy_config(cls, config: dict) -> None:
        if config.get("variant", "suite") != "suite":
            raise ValueError(f"a checkpoint of variant {config['variant']!r} is not a {cls.__name__}; load it with "
                             "models.load_dit")

    @property
    def causal(self) -> bool:
        return self.config.causal

    @property
    def kv_cache_exact(self) -> bool:
        """Exact under the causal mask: the context is conditioned as clean (`_conditioning`), so its keys and
        values never depend on the current frame or its timestep."""
        return bool(self.config.causal)

    def _check_cache(self) -> None:
        if not self.config.causal:
            raise ValueError("the history KV cache needs causal attention (model.attention: causal)")

    def _conditioning(self, timestep: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(context, current) conditioning vectors: the context (text + history) is conditioned as clean (t = 0),
        the frames being denoised on their timestep. Under the causal mask the context then never depends on
        the current frame or its timestep, which is what makes the history KV cache exact."""
        p = self.pooled_emb(pooled)
        c_cur = self._embed(timestep, p)
        c_ctx = self._embed(torch.zeros_like(timestep), p)
        return c_ctx, c_cur

    def _current_positions(self, gh: int, gw: int, FH: int, FW: int, dev, dtype) -> torch.Tensor:
        """Sin-cos of the centred crop of the full grid's integer coordinates (extrapolated)."""
        return spatial_embedding(gh, gw, FH, FW, self.config.hidden_size, False, dev, dtype)

    def _history_position(self, gh: int, gw: int, FH: int, FW: int, cur_grid: tuple[int, int] | None, dev,
                          dtype) -> torch.Tensor:
        """Sin-cos of coordinates interpolated over the full grid (the current grid is not needed)."""
        return spatial_embedding(gh, gw, FH, FW, self.config.hidden_size, True, dev, dtype)


def build_dit(cfg, text_dim: int, pooled_dim: int) -> PyramidDiT:
    """The profile's MM-DiT (cfg.model, its attention kernel included; latent channels from cfg.vae)."""
    m = cfg.model
    model = PyramidDiT(in_channels=cfg.vae.latent_channels, patch_size=m.patch_size, hidden_size=m.hidden_size,
                       depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio, qk_norm=m.qk_norm,
                       text_dim=text_dim, pooled_dim=pooled_dim, causal=m.attention == "causal")
    return set_kernel(model, m.attention_kernel)
