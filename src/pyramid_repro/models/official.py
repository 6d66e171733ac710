"""The authors' MM-DiT semantics and weight layout (docs/method.md §3.6): the `official` variant of PyramidDiT.

The released Pyramid Flow transformer (SD3-based) keeps diffusers' SD3 key layout. Where its semantics differ from
this suite's own MM-DiT, `PyramidDiT(variant="official")` follows the release:

* every token (text and history too) is modulated by the current timestep (`PyramidDiT._conditioning`);
* text tokens attend to text and to the first frame's video tokens (`positions.attention_mask`);
* spatial positions are a crop of one sin-cos table (`official_pos_table`, `crop_pos_table`) around the grid,
  as diffusers' SD3 PatchEmbed crops its `pos_embed` buffer; a history frame coarser than the current frame gets
  the current frame's crop resampled bilinearly to its grid (`history_pos_table`: table *values* interpolated,
  not sin-cos of interpolated coordinates);
* temporal RoPE of the latent frame index over the whole history (oldest history frame = 0, the current frame =
  number of history frames), text at index 0;
* QK RMS-norm with its own epsilon, and a last block whose text stream only gives keys and values
  ("context pre-only": adaLN (scale, shift), no output projection, no MLP).

`sd3_to_suite` converts a transformer state dict in that layout (diffusers' `SD3Transformer2DModel`, or the
release's folder) into this suite's, key by key, and fails on any key left over or missing.

The history KV cache is refused for this variant: with the context modulated by the current timestep its keys
and values change at every Euler step, so a cache would not be exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pyramid_repro.models.positions import sincos_2d


def official_pos_table(max_size: int, base_size: int, hidden: int) -> torch.Tensor:
    """(1, max_size**2, hidden) sin-cos table of a max_size x max_size grid whose coordinates are scaled so that
    `base_size` cells span the unit the model was trained on (coordinate = index * base_size / max_size); each row
    holds the column coordinate's embedding first, then the row's (diffusers' get_2d_sincos_pos_embed layout)."""
    coords = torch.arange(max_size, dtype=torch.float64) * (base_size / max_size)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    return sincos_2d(cols.flatten(), rows.flatten(), hidden)[None]


def crop_pos_table(table: torch.Tensor, max_size: int, gh: int, gw: int) -> torch.Tensor:
    """(gh*gw, hidden): the centred gh x gw crop of the table (top/left offsets rounded down, as diffusers' SD3
    PatchEmbed.cropped_pos_embed)."""
    if gh > max_size or gw > max_size:
        raise ValueError(f"a {gh}x{gw} patch grid does not fit the {max_size}x{max_size} position table")
    top, left = (max_size - gh) // 2, (max_size - gw) // 2
    return table.reshape(max_size, max_size, -1)[top:top + gh, left:left + gw].reshape(gh * gw, -1)


def history_pos_table(table: torch.Tensor, max_size: int, cur_gh: int, cur_gw: int, gh: int,
                      gw: int) -> torch.Tensor:
    """(gh*gw, hidden) positions of a history frame on a gh x gw patch grid when the current frame has a
    cur_gh x cur_gw grid: the current frame's crop of the table, bilinearly resized to gh x gw (half-pixel
    centres, no antialiasing), which is how the authors' PatchEmbed3D places condition latents
    (`interp_condition_pos`). A history frame of the current frame's size gets the crop itself."""
    crop = crop_pos_table(table, max_size, cur_gh, cur_gw)
    if (gh, gw) == (cur_gh, cur_gw):
        return crop
    if gh > cur_gh or gw > cur_gw:
        raise ValueError(f"a {gh}x{gw} history frame is larger than the {cur_gh}x{cur_gw} current frame; the "
                         "authors' history is never finer than the frame being generated")
    grid = crop.reshape(1, cur_gh, cur_gw, -1).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(gh * gw, -1)


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
    """A state dict in the SD3 / release layout -> PyramidDiT(variant='official')'s, every tensor used once.

    Fused q/k/v projections are concatenated in (q, k, v) order; the patch convolution becomes the linear patch
    embedding (its (channel, row, column) flattening is the suite's); the final adaLN's (scale, shift) halves are
    swapped to the suite's (shift, scale); the output rows go from (row, column, channel) to (channel, row,
    column) order. Raises KeyError naming any key it could not place."""
    src, out = dict(state), {}

    def take(key: str) -> torch.Tensor:
        if key not in src:
            raise KeyError(f"the transformer's state dict has no {key!r} (not an SD3-layout Pyramid Flow "
                           "transformer, or a truncated file)")
        return src.pop(key)

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
                if f"{pre}{old}.{t}" in src:
                    out[f"blocks.{i}.{new}.{t}"] = take(f"{pre}{old}.{t}")
    scale, shift = take("norm_out.linear.weight").chunk(2)
    out["final_ada.1.weight"] = torch.cat([shift, scale])
    scale, shift = take("norm_out.linear.bias").chunk(2)
    out["final_ada.1.bias"] = torch.cat([shift, scale])
    p, c = patch_size, out_channels
    w, b = take("proj_out.weight"), take("proj_out.bias")
    out["final.weight"] = w.reshape(p, p, c, -1).permute(2, 0, 1, 3).reshape(p * p * c, -1)
    out["final.bias"] = b.reshape(p, p, c).permute(2, 0, 1).reshape(-1)
    if src:
        raise KeyError(f"{len(src)} weights of the transformer have no place in the suite's model: "
                       f"{sorted(src)[:8]}")
    return out


def suite_kwargs_from_sd3(config: dict, qk_norm_eps: float = 1e-6) -> dict:
    """PyramidDiT(variant='official') arguments from an SD3-layout transformer config.json."""
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
            "pooled_dim": config["pooled_projection_dim"], "causal": True, "variant": "official",
            "qk_norm_eps": qk_norm_eps, "pos_embed_max_size": config["pos_embed_max_size"],
            "pos_embed_base_size": config["sample_size"] // config["patch_size"]}


def load_sd3_layout(folder: str | Path, qk_norm_eps: float = 1e-6):
    """PyramidDiT(variant='official') with the weights of an SD3-layout transformer folder (config.json and
    *.safetensors), loaded strictly; float32, in eval mode on the CPU."""
    from safetensors.torch import load_file

    from pyramid_repro.models.dit import PyramidDiT

    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected a transformer folder of the release)")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    kwargs = suite_kwargs_from_sd3(json.loads(cfg_file.read_text()), qk_norm_eps)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    # built on the meta device and filled with the file's tensors (as float32): the release's 2B parameters are
    # neither randomly initialised first nor held twice
    with torch.device("meta"):
        model = PyramidDiT(**kwargs)
    converted = sd3_to_suite(state, kwargs["patch_size"], kwargs["in_channels"])
    model.load_state_dict({k: v.float().contiguous() for k, v in converted.items()}, strict=True, assign=True)
    return model.eval()
