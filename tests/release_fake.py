"""A fake of the authors' release folder for tests: tiny random models in the release's layout (folder names, file
names, config keys and weight names), small enough to sample on a CPU in seconds. Not a test module."""

from __future__ import annotations

import json
from pathlib import Path

import torch

T5_DIM, CLIP_L, CLIP_G = 32, 8, 12  # the fake text encoders' token and pooled dimensions


def write_fake_transformer(folder: Path, seed: int = 0) -> Path:
    """A tiny transformer as the release stores it: the authors' PyramidDiffusionMMDiT config.json and a
    diffusion_pytorch_model.safetensors whose names are the authors' (norm_add_q, not diffusers' norm_added_q).
    Built from diffusers' SD3Transformer2DModel (same layout), every tensor re-randomised."""
    from diffusers import SD3Transformer2DModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    cfg = dict(sample_size=16, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
               num_attention_heads=2, joint_attention_dim=T5_DIM, caption_projection_dim=16,
               pooled_projection_dim=CLIP_L + CLIP_G, pos_embed_max_size=24, qk_norm="rms_norm")
    m = SD3Transformer2DModel(**cfg)
    with torch.no_grad():
        for t in list(m.parameters()) + [m.pos_embed.pos_embed]:
            t.copy_(torch.randn_like(t) * 0.1)
    state = {k.replace(".norm_added_", ".norm_add_"): v.contiguous() for k, v in m.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    authors = {"_class_name": "PyramidDiffusionMMDiT", "_diffusers_version": "0.30.3", **cfg,
               "max_num_frames": 200, "pos_embed_type": "sincos", "temp_pos_embed_type": "rope",
               "use_flash_attn": False, "use_gradient_checkpointing": False, "use_temporal_causal": True,
               "use_t5_mask": True, "add_temp_pos_embed": True, "interp_condition_pos": True,
               "gradient_checkpointing_ratio": 0.6}
    (folder / "config.json").write_text(json.dumps(authors, indent=2))
    return folder


def write_fake_release(root: Path, resolutions: tuple[str, ...] = ("384p",), seed: int = 0) -> Path:
    """root/diffusion_transformer_<res>/, causal_video_vae/, text_encoder*/, tokenizer*/ with tiny random
    models."""
    from release_fake_text import write_fake_text_encoders
    from release_fake_vae import write_fake_release_vae

    root.mkdir(parents=True, exist_ok=True)
    for i, res in enumerate(resolutions):
        write_fake_transformer(root / f"diffusion_transformer_{res}", seed + i)
    write_fake_release_vae(root / "causal_video_vae", seed=seed)
    write_fake_text_encoders(root, t5_dim=T5_DIM, clip_l_proj=CLIP_L, clip_g_proj=CLIP_G, seed=seed)
    return root
