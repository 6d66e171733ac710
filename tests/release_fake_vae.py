"""Test helper (not a test file): a fake of the authors' released `causal_video_vae/` folder, and the release's
state-dict layout written out by hand from their modules.

Release: github.com/jy0205/Pyramid-Flow, video_vae/ (modeling_causal_vae.py, modeling_enc_dec.py,
modeling_block.py, modeling_resnet.py, modeling_causal_conv.py). The key list is spelled out here from those modules,
independently of src/pyramid_repro/vae/official.py, so that loading it strictly checks that module's names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file


def release_config(channels=(128, 256, 512, 512), latent_channels: int = 16, groups: int = 32,
                   encoder_layers: int = 2, decoder_layers: int = 3) -> dict:
    """config.json as the release writes it (its CausalVideoVAE keys, diffusers meta keys included); the defaults
    are the released model's values."""
    n = len(channels)
    down = [True] * (n - 1) + [False]
    return {
        "_class_name": "CausalVideoVAE", "_diffusers_version": "0.29.2",
        "add_post_quant_conv": True,
        "decoder_act_fn": "silu", "decoder_block_dropout": [0.0] * n, "decoder_block_out_channels": list(channels),
        "decoder_in_channels": latent_channels, "decoder_layers_per_block": [decoder_layers] * n,
        "decoder_norm_num_groups": groups, "decoder_out_channels": 3, "decoder_spatial_up_sample": down,
        "decoder_temporal_up_sample": down, "decoder_type": "causal_vae_conv",
        "decoder_up_block_types": ["UpDecoderBlockCausal3D"] * n, "downsample_scale": 8,
        "encoder_act_fn": "silu", "encoder_block_dropout": [0.0] * n, "encoder_block_out_channels": list(channels),
        "encoder_double_z": True, "encoder_down_block_types": ["DownEncoderBlockCausal3D"] * n,
        "encoder_in_channels": 3, "encoder_layers_per_block": [encoder_layers] * n,
        "encoder_norm_num_groups": groups, "encoder_out_channels": latent_channels,
        "encoder_spatial_down_sample": down, "encoder_temporal_down_sample": down,
        "encoder_type": "causal_vae_conv", "interpolate": False, "sample_size": 256, "scaling_factor": 0.13025,
    }


def release_shapes(encoder_levels, decoder_levels, latent_channels: int = 16, encoder_layers: int = 2,
                   decoder_layers: int = 3) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of the release's CausalVideoVAE.

    encoder_levels / decoder_levels: one (in_channels, out_channels, resamples) per down / up block, in the order
    of `down_blocks` / `up_blocks`. Layout, from the authors' modules: every CausalConv3d wraps an nn.Conv3d as
    `.conv`; CausalResnetBlock3D = norm1, conv1, norm2, conv2 (+ 1x1x1 conv_shortcut when the width changes);
    DownEncoderBlockCausal3D = resnets, downsamplers.0 (stride-(1,2,2) conv), temporal_downsamplers.0 (stride-(2,1,1)
    conv); UpDecoderBlockCausal3D = resnets, upsamplers.0 (conv to 4C), temporal_upsamplers.0 (conv to 2C);
    CausalUNetMidBlock2D = resnets.0, attentions.0 (diffusers Attention: group_norm, to_q, to_k, to_v, to_out.0),
    resnets.1; encoder/decoder = conv_in, blocks, mid_block, conv_norm_out, conv_out; then quant_conv (2z -> 2z)
    and post_quant_conv (z -> z), both 1x1x1."""
    s: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k=3):
        s[f"{name}.conv.weight"], s[f"{name}.conv.bias"] = (cout, cin, k, k, k), (cout,)

    def vector(name, c):
        s[f"{name}.weight"], s[f"{name}.bias"] = (c,), (c,)

    def linear(name, c):
        s[f"{name}.weight"], s[f"{name}.bias"] = (c, c), (c,)

    def resnet(name, cin, cout):
        vector(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout)
        vector(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout)
        if cin != cout:
            conv(f"{name}.conv_shortcut", cin, cout, k=1)

    def mid(name, c):
        resnet(f"{name}.resnets.0", c, c)
        vector(f"{name}.attentions.0.group_norm", c)
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            linear(f"{name}.attentions.0.{proj}", c)
        resnet(f"{name}.resnets.1", c, c)

    z = latent_channels
    conv("encoder.conv_in", 3, encoder_levels[0][0])
    for i, (cin, cout, down) in enumerate(encoder_levels):
        for j in range(encoder_layers):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
        if down:
            conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", cout, cout)
            conv(f"encoder.down_blocks.{i}.temporal_downsamplers.0.conv", cout, cout)
    top = encoder_levels[-1][1]
    mid("encoder.mid_block", top)
    vector("encoder.conv_norm_out", top)
    conv("encoder.conv_out", top, 2 * z)
    conv("quant_conv", 2 * z, 2 * z, k=1)
    conv("post_quant_conv", z, z, k=1)
    conv("decoder.conv_in", z, decoder_levels[0][0])
    mid("decoder.mid_block", decoder_levels[0][0])
    for i, (cin, cout, up) in enumerate(decoder_levels):
        for j in range(decoder_layers):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
        if up:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", cout, 4 * cout)
            conv(f"decoder.up_blocks.{i}.temporal_upsamplers.0.conv", cout, 2 * cout)
    bottom = decoder_levels[-1][1]
    vector("decoder.conv_norm_out", bottom)
    conv("decoder.conv_out", bottom, 3)
    return s


def levels_of(channels) -> tuple[list, list]:
    """(encoder_levels, decoder_levels) of the release's layout for block widths `channels`: every block but the
    last resamples; down block i goes channels[i-1] -> channels[i], up block i mirrors it."""
    ch, rev, n = list(channels), list(reversed(channels)), len(channels)
    enc = [(ch[max(i - 1, 0)], ch[i], i < n - 1) for i in range(n)]
    dec = [(rev[max(i - 1, 0)], rev[i], i < n - 1) for i in range(n)]
    return enc, dec


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor random and non-zero: weights ~ N(0, 1/fan_in) (activations stay O(1) through the stack),
    norm scales 1 + N(0, 0.1^2), biases and norm shifts N(0, 0.05^2)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if len(shape) > 1:
            x = x / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(".weight"):  # a GroupNorm scale
            x = 1.0 + 0.1 * x
        else:
            x = 0.05 * x
        out[key] = x
    return out


def write_fake_release_vae(folder: Path, channels=(8, 16, 32, 32), seed: int = 0) -> Path:
    """A release-layout `causal_video_vae/` folder (config.json with the authors' key names + model.safetensors of
    random weights) for a small-width instance with the release's depth (2 encoder / 3 decoder resnets per level),
    16 latent channels and 8x8x8 compression. The group count is the release's config key
    `{en,de}coder_norm_num_groups`; the fake uses the largest count <= 32 dividing every width (8 for the default)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups = math.gcd(32, *channels)
    (folder / "config.json").write_text(json.dumps(release_config(channels, groups=groups), indent=2))
    enc, dec = levels_of(channels)
    save_file(random_state_dict(release_shapes(enc, dec), seed), str(folder / "model.safetensors"))
    return folder
