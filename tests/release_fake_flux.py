"""A fake of the authors' miniFLUX release folder for tests: tiny random models in its layout (folder names, file
names, config keys and weight names of their PyramidFluxTransformer, CLIP-L in text_encoder/ and T5 in
text_encoder_2/), small enough to sample on a CPU in seconds. Not a test module.

The transformer's weights are written from the release's names and shapes alone (`release_shapes`), never from
this suite's class, so a strict load checks the converter against the layout, not against itself."""

from __future__ import annotations

import json
from pathlib import Path

import torch

T5_DIM, CLIP_HIDDEN = 32, 16  # the fake text encoders' token and pooled dimensions

# the release's transformer config keys (their PyramidFluxTransformer's register_to_config arguments)
TINY = dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=T5_DIM, pooled_projection_dim=CLIP_HIDDEN,
            axes_dims_rope=[4, 6, 6], use_flash_attn=False, use_temporal_causal=True, interp_condition_pos=True,
            use_gradient_checkpointing=False, gradient_checkpointing_ratio=0.6)


def release_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of their PyramidFluxTransformer and its shape, from the config (their module tree:
    x_embedder, context_embedder, time_text_embed, transformer_blocks.N (FluxTransformerBlock),
    single_transformer_blocks.N (FluxSingleTransformerBlock), norm_out, proj_out)."""
    H = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    hd, C = cfg["attention_head_dim"], cfg["in_channels"]
    s: dict[str, tuple[int, ...]] = {}

    def lin(name: str, n_in: int, n_out: int) -> None:
        s[f"{name}.weight"], s[f"{name}.bias"] = (n_out, n_in), (n_out,)

    lin("x_embedder", C, H)
    lin("context_embedder", cfg["joint_attention_dim"], H)
    lin("time_text_embed.timestep_embedder.linear_1", 256, H)
    lin("time_text_embed.timestep_embedder.linear_2", H, H)
    lin("time_text_embed.text_embedder.linear_1", cfg["pooled_projection_dim"], H)
    lin("time_text_embed.text_embedder.linear_2", H, H)
    for i in range(cfg["num_layers"]):
        b = f"transformer_blocks.{i}."
        lin(b + "norm1.linear", H, 6 * H)
        lin(b + "norm1_context.linear", H, 6 * H)
        for n in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            lin(b + "attn." + n, H, H)
        lin(b + "attn.to_out.0", H, H)
        for n in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            s[b + f"attn.{n}.weight"] = (hd,)
        for ff in ("ff", "ff_context"):
            lin(b + f"{ff}.net.0.proj", H, 4 * H)
            lin(b + f"{ff}.net.2", 4 * H, H)
    for i in range(cfg["num_single_layers"]):
        b = f"single_transformer_blocks.{i}."
        lin(b + "norm.linear", H, 3 * H)
        lin(b + "proj_mlp", H, 4 * H)
        lin(b + "proj_out", 5 * H, H)
        for n in ("to_q", "to_k", "to_v"):
            lin(b + "attn." + n, H, H)
        for n in ("norm_q", "norm_k"):
            s[b + f"attn.{n}.weight"] = (hd,)
    lin("norm_out.linear", H, 2 * H)
    lin("proj_out", H, C)  # patch 2 x 2 x (in_channels / 4)
    return s


def fake_state(cfg: dict = TINY, seed: int = 0, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """Random tensors under the release's names (norm weights around 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in release_shapes(cfg).items():
        t = torch.randn(shape, generator=g) * scale
        out[k] = 1 + t if ".norm_" in k and k.endswith(".weight") and "linear" not in k else t
    return out


def write_fake_miniflux_transformer(folder: Path, seed: int = 0, cfg: dict = TINY,
                                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """config.json (the release's keys) and diffusion_pytorch_model.safetensors (the release's names)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = fake_state(cfg, seed) if state is None else state
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "PyramidFluxTransformer",
                                                    "_diffusers_version": "0.30.3", **cfg}, indent=2))
    return folder


def write_fake_miniflux_text(root: Path, seed: int = 0) -> Path:
    """text_encoder/ (CLIPTextModel, CLIP-L's class), tokenizer/ (CLIP BPE), text_encoder_2/ (T5EncoderModel),
    tokenizer_2/ (T5) under `root`, tiny and random."""
    from release_fake_text import CLIP_MAX_LENGTH, _write_clip_tokenizer, _write_t5_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    v_clip = _write_clip_tokenizer(root / "tokenizer", "<|endoftext|>")
    v_t5 = _write_t5_tokenizer(root / "tokenizer_2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = CLIPTextConfig(vocab_size=v_clip, hidden_size=CLIP_HIDDEN, intermediate_size=2 * CLIP_HIDDEN,
                             num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CLIP_MAX_LENGTH,
                             bos_token_id=v_clip - 2, eos_token_id=v_clip - 1, pad_token_id=v_clip - 1)
        CLIPTextModel(cfg).save_pretrained(root / "text_encoder")
        cfg = T5Config(vocab_size=v_t5, d_model=T5_DIM, d_kv=8, d_ff=2 * T5_DIM, num_layers=2, num_heads=2,
                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        T5EncoderModel(cfg).save_pretrained(root / "text_encoder_2")
    return root


def write_fake_miniflux_release(root: Path, resolutions: tuple[str, ...] = ("384p",), seed: int = 0) -> Path:
    """root/diffusion_transformer_<res>/, causal_video_vae/, text_encoder{,_2}/, tokenizer{,_2}/."""
    from release_fake_vae import write_fake_release_vae

    root.mkdir(parents=True, exist_ok=True)
    for i, res in enumerate(resolutions):
        write_fake_miniflux_transformer(root / f"diffusion_transformer_{res}", seed + i)
    write_fake_release_vae(root / "causal_video_vae", seed=seed)
    write_fake_miniflux_text(root, seed)
    return root
