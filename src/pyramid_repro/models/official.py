"""The authors' released MM-DiT (docs/method.md §3.6): `OfficialPyramidDiT`, and its weight layout.

The released Pyramid Flow transformer (SD3-based) keeps diffusers' SD3 key layout. It is the shared MM-DiT of
models/mmdit.py with the release's semantics where they differ from this suite's `PyramidDiT`:

* every token (text and history too) is modulated by the current timestep (`_conditioning`);
* text tokens attend to text and to the first frame's video tokens (`text_sees_first_frame`,
  `positions.attention_mask`);
* spatial positions are a crop of one sin-cos table (`positions.official_pos_table`, `positions.crop_pos_table`)
  around the grid, as diffusers' SD3 PatchEmbed crops its `pos_embed` buffer; a history frame coarser than the
  current frame gets the current frame's crop resampled bilinearly to its grid (`positions.history_pos_table`:
  table *values* interpolated, not sin-cos of interpolated coordinates);
* temporal RoPE of the latent frame index over the whole history (oldest history frame = 0, the current frame =
  number of history frames), text at index 0;
* QK RMS-norm with the authors' epsilon (`OFFICIAL_QK_NORM_EPS`), and a last block whose text stream only gives
  keys and values ("context pre-only": adaLN (scale, shift), no output projection, no MLP).

`sd3_to_suite` converts a transformer state dict in that layout (diffusers' `SD3Transformer2DModel`, or the
release's folder) into this suite's, key by key, and fails on any key left over or missing; `load_sd3_layout`
builds the model from such a folder. `suite_to_sd3` and `sd3_config_from_suite` go back (export of a fine-tuned
model into the release's layout, releases.py).

The history KV cache is refused for this model (`kv_cache_exact` is False): with the context modulated by the
current timestep its keys and values change at every Euler step, so a cache would not be exact.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.configuration_utils import register_to_config

from pyramid_repro.models.base import StateTaker, read_release_folder
from pyramid_repro.models.mmdit import MMDiT
from pyramid_repro.models.positions import crop_pos_table, history_pos_table, official_pos_table

OFFICIAL_QK_NORM_EPS = 1e-5  # the authors' JointAttention RMSNorm default (diffusers' SD3 uses 1e-6)


class OfficialPyramidDiT(MMDiT):
    """The authors' released transformer (module docstring); parameter names are `PyramidDiT`'s plus the position
    table buffer `pos_table`."""

    text_sees_first_frame = True
    # written by the single class that held both models before this one ("official", always causal)
    legacy_config_keys = ("variant", "causal")

    @register_to_config
    def __init__(self, in_channels: int = 16, patch_size: int = 2, hidden_size: int = 1536, depth: int = 24,
                 num_heads: int = 24, mlp_ratio: float = 4.0, qk_norm: bool = True, text_dim: int = 4096,
                 pooled_dim: int = 2048, qk_norm_eps: float = OFFICIAL_QK_NORM_EPS, pos_embed_max_size: int = 0,
                 pos_embed_base_size: int = 0):
        super().__init__(in_channels=in_channels, patch_size=patch_size, hidden_size=hidden_size, depth=depth,
                         num_heads=num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm, text_dim=text_dim,
                         pooled_dim=pooled_dim, qk_norm_eps=qk_norm_eps, text_pre_only_last=True)
        if not (pos_embed_max_size > 0 and pos_embed_base_size > 0):
            raise ValueError(f"{type(self).__name__} needs pos_embed_max_size and pos_embed_base_size (the "
                             "authors' sin-cos table, e.g. 192 and 64)")
        # the authors' position table, cropped around each grid (models/positions.py)
        self.register_buffer("pos_table", official_pos_table(pos_embed_max_size, pos_embed_base_size, hidden_size))

    @classmethod
    def check_legacy_config(cls, config: dict) -> None:
        if not config.get("causal", True):
            raise ValueError("a bidirectional checkpoint of the authors' model: the release is causal, and "
                             f"{cls.__name__} only causal")

    @property
    def causal(self) -> bool:
        return True

    def _check_cache(self) -> None:
        raise ValueError("the history KV cache is not exact for the authors' model: it modulates the context "
                         "(text and history) with the current timestep, so its keys and values change at every "
                         "denoising step; sample without the cache")

    def _conditioning(self, timestep: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token, context included, is conditioned on the current timestep."""
        c_cur = self._embed(timestep, self.pooled_emb(pooled))
        return c_cur, c_cur

    def _current_positions(self, gh: int, gw: int, FH: int, FW: int, dev, dtype) -> torch.Tensor:
        """The centred gh x gw crop of the table (the full grid is not used)."""
        return crop_pos_table(self.pos_table, self.config.pos_embed_max_size, gh, gw).to(dev, dtype)

    def _history_position(self, gh: int, gw: int, FH: int, FW: int, cur_grid: tuple[int, int] | None, dev,
                          dtype) -> torch.Tensor:
        """The current frame's crop of the table resized to the history grid (so it needs `cur_grid`)."""
        pos = history_pos_table(self.pos_table, self.config.pos_embed_max_size, *cur_grid, gh, gw)
        return pos.to(dev, dtype)


# release / diffusers SD3 names -> this suite's, per block (the text stream's QK norms have two spellings: diffusers'
# norm_added_q and the authors' norm_add_q)
_BLOCK = {
    "norm1.linear": "vid.ada.1", "norm1_context.linear": "txt.ada.1",
    "attn.norm_q": "vid.q_norm", "attn.norm_k": "vid.k_norm",
    "attn.norm_added_q": "txt.q_norm", "attn.norm_added_k": "txt.k_norm",
    "attn.norm_add_q": "txt.q_norm", "attn.norm_add_k": "txt.k_norm",
    "attn.to_out.0": "vid.proj", "attn.to_add_out": "txt.proj",
    "ff.net.0.proj": "vid.mlp.0", "ff.net.2": "vid.mlp.2",
    "ff_context.net.0.proj": "txt.mlp.0", "ff_context.net.2": "txt.mlp.2",
}
_TOP = {
    "time_text_embed.timestep_embedder.linear_1": "time_emb.linear_1",
    "time_text_embed.timestep_embedder.linear_2": "time_emb.linear_2",
    "time_text_embed.text_embedder.linear_1": "pooled_emb.0",
    "time_text_embed.text_embedder.linear_2": "pooled_emb.2",
    "context_embedder": "text_proj",
}
_QKV = {"vid": ("attn.to_q", "attn.to_k", "attn.to_v"), "txt": ("attn.add_q_proj", "attn.add_k_proj",
                                                                "attn.add_v_proj")}


def sd3_to_suite(state: dict[str, torch.Tensor], patch_size: int, out_channels: int) -> dict[str, torch.Tensor]:
    """A state dict in the SD3 / release layout -> OfficialPyramidDiT's, every tensor used once.

    Fused q/k/v projections are concatenated in (q, k, v) order; the patch convolution becomes the linear patch
    embedding (its (channel, row, column) flattening is the suite's); the final adaLN's (scale, shift) halves are
    swapped to the suite's (shift, scale); the output rows go from (row, column, channel) to (channel, row,
    column) order. Raises KeyError naming any key it could not place."""
    out: dict[str, torch.Tensor] = {}
    take = StateTaker(state, "the transformer's state dict has no {key} (not an SD3-layout Pyramid Flow "
                      "transformer, or a truncated file)", "of the transformer have no place in the suite's model")

    out["pos_table"] = take("pos_embed.pos_embed")
    w = take("pos_embed.proj.weight")
    out["patch.weight"], out["patch.bias"] = w.reshape(w.shape[0], -1), take("pos_embed.proj.bias")
    for old, new in _TOP.items():
        for t in ("weight", "bias"):
            out[f"{new}.{t}"] = take(f"{old}.{t}")
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks.")})
    for i in blocks:
        pre = f"transformer_blocks.{i}."
        for stream, names in _QKV.items():
            for t in ("weight", "bias"):
                out[f"blocks.{i}.{stream}.qkv.{t}"] = torch.cat([take(f"{pre}{n}.{t}") for n in names])
        for old, new in _BLOCK.items():
            for t in ("weight", "bias"):
                if f"{pre}{old}.{t}" in take:
                    out[f"blocks.{i}.{new}.{t}"] = take(f"{pre}{old}.{t}")
    scale, shift = take("norm_out.linear.weight").chunk(2)
    out["final_ada.1.weight"] = torch.cat([shift, scale])
    scale, shift = take("norm_out.linear.bias").chunk(2)
    out["final_ada.1.bias"] = torch.cat([shift, scale])
    p, c = patch_size, out_channels
    w, b = take("proj_out.weight"), take("proj_out.bias")
    out["final.weight"] = w.reshape(p, p, c, -1).permute(2, 0, 1, 3).reshape(p * p * c, -1)
    out["final.bias"] = b.reshape(p, p, c).permute(2, 0, 1).reshape(-1)
    take.done()
    return out


# the inverse of `_BLOCK`: the authors' spelling of the text stream's QK norms (norm_add_q), as the release files
# have it
_BLOCK_BACK = {new: old for old, new in _BLOCK.items() if ".norm_added_" not in old}
_TOP_BACK = {new: old for old, new in _TOP.items()}


def suite_to_sd3(state: dict[str, torch.Tensor], patch_size: int, out_channels: int) -> dict[str, torch.Tensor]:
    """The inverse of `sd3_to_suite`: OfficialPyramidDiT's state dict -> the release's names and layouts, every
    tensor used once, dtypes kept. q/k/v are split back into thirds, the patch linear becomes the (out, channel,
    row, column) convolution weight, the final adaLN halves go back to (scale, shift), the output rows to (row,
    column, channel) order, the text QK norms to the authors' `norm_add_q/norm_add_k`. Raises KeyError naming a
    missing key or one it cannot place."""
    out: dict[str, torch.Tensor] = {}
    p, c = patch_size, out_channels
    take = StateTaker(state, "OfficialPyramidDiT's state dict has no {key} (not this class's weights, or a "
                      "truncated checkpoint)", "of OfficialPyramidDiT have no place in the release's layout")

    out["pos_embed.pos_embed"] = take("pos_table")
    w = take("patch.weight")
    out["pos_embed.proj.weight"] = w.reshape(w.shape[0], -1, p, p)
    out["pos_embed.proj.bias"] = take("patch.bias")
    for new, old in _TOP_BACK.items():
        for t in ("weight", "bias"):
            out[f"{old}.{t}"] = take(f"{new}.{t}")
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    for i in blocks:
        pre = f"transformer_blocks.{i}."
        for stream, names in _QKV.items():
            for t in ("weight", "bias"):
                for n, part in zip(names, take(f"blocks.{i}.{stream}.qkv.{t}").chunk(3)):
                    out[f"{pre}{n}.{t}"] = part.clone()
        for new, old in _BLOCK_BACK.items():
            for t in ("weight", "bias"):
                if f"blocks.{i}.{new}.{t}" in take:
                    out[f"{pre}{old}.{t}"] = take(f"blocks.{i}.{new}.{t}")
    for t in ("weight", "bias"):
        shift, scale = take(f"final_ada.1.{t}").chunk(2)
        out[f"norm_out.linear.{t}"] = torch.cat([scale, shift])
    w, b = take("final.weight"), take("final.bias")
    out["proj_out.weight"] = w.reshape(c, p, p, -1).permute(1, 2, 0, 3).reshape(p * p * c, -1).contiguous()
    out["proj_out.bias"] = b.reshape(c, p, p).permute(1, 2, 0).reshape(-1).contiguous()
    take.done()
    return out


# the release's transformer config.json beyond the architecture (the authors' PyramidDiffusionMMDiT arguments as
# their 384p/768p folders set them): written when a model is exported without its release's own config.json
SD3_RELEASE_EXTRAS = {
    "_class_name": "PyramidDiffusionMMDiT", "_diffusers_version": "0.30.3", "max_num_frames": 200,
    "pos_embed_type": "sincos", "temp_pos_embed_type": "rope", "use_flash_attn": False,
    "use_gradient_checkpointing": False, "use_temporal_causal": True, "use_t5_mask": True,
    "add_temp_pos_embed": True, "interp_condition_pos": True, "gradient_checkpointing_ratio": 0.6,
}


def sd3_config_from_suite(kwargs: dict) -> dict:
    """The release's transformer config.json from OfficialPyramidDiT's arguments (the inverse of
    `suite_kwargs_from_sd3`), with the authors' other keys (`SD3_RELEASE_EXTRAS`)."""
    hidden, heads = kwargs["hidden_size"], kwargs["num_heads"]
    arch = {"sample_size": kwargs["pos_embed_base_size"] * kwargs["patch_size"], "patch_size": kwargs["patch_size"],
            "in_channels": kwargs["in_channels"], "num_layers": kwargs["depth"],
            "attention_head_dim": hidden // heads, "num_attention_heads": heads,
            "joint_attention_dim": kwargs["text_dim"], "caption_projection_dim": hidden,
            "pooled_projection_dim": kwargs["pooled_dim"], "pos_embed_max_size": kwargs["pos_embed_max_size"],
            "qk_norm": "rms_norm" if kwargs["qk_norm"] else None}
    return {**SD3_RELEASE_EXTRAS, **arch}


def suite_kwargs_from_sd3(config: dict, qk_norm_eps: float = OFFICIAL_QK_NORM_EPS) -> dict:
    """OfficialPyramidDiT arguments from an SD3-layout transformer config.json."""
    needed = ("patch_size", "in_channels", "num_layers", "attention_head_dim", "num_attention_heads",
              "joint_attention_dim", "pooled_projection_dim", "pos_embed_max_size", "sample_size")
    missing = [k for k in needed if config.get(k) is None]
    if missing:
        raise ValueError(f"transformer config.json lacks {missing}: not an SD3-layout transformer config")
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    if config.get("caption_projection_dim", hidden) != hidden:
        raise ValueError(f"caption_projection_dim {config['caption_projection_dim']} != hidden size {hidden}")
    if config.get("out_channels") not in (None, config["in_channels"]):
        raise ValueError("out_channels must equal in_channels (the model predicts a velocity of its input)")
    return {"in_channels": config["in_channels"], "patch_size": config["patch_size"], "hidden_size": hidden,
            "depth": config["num_layers"], "num_heads": config["num_attention_heads"], "mlp_ratio": 4.0,
            "qk_norm": config.get("qk_norm") == "rms_norm", "text_dim": config["joint_attention_dim"],
            "pooled_dim": config["pooled_projection_dim"], "qk_norm_eps": qk_norm_eps,
            "pos_embed_max_size": config["pos_embed_max_size"],
            "pos_embed_base_size": config["sample_size"] // config["patch_size"]}


def load_sd3_layout(folder: str | Path, qk_norm_eps: float = OFFICIAL_QK_NORM_EPS) -> OfficialPyramidDiT:
    """OfficialPyramidDiT with the weights of an SD3-layout transformer folder (config.json and
    *.safetensors), loaded strictly; float32, in eval mode on the CPU."""
    config, state = read_release_folder(folder, "a transformer folder of the release")
    kwargs = suite_kwargs_from_sd3(config, qk_norm_eps)
    # built on the meta device and filled with the file's tensors (as float32): the release's 2B parameters are
    # neither randomly initialised first nor held twice
    with torch.device("meta"):
        model = OfficialPyramidDiT(**kwargs)
    converted = sd3_to_suite(state, kwargs["patch_size"], kwargs["in_channels"])
    model.load_state_dict({k: v.float().contiguous() for k, v in converted.items()}, strict=True, assign=True)
    return model.eval()
