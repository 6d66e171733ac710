"""The authors' causal video VAE, rebuilt so that their released `causal_video_vae/` folder loads strictly.

Release: github.com/jy0205/Pyramid-Flow, `video_vae/` — modeling_causal_vae.py (CausalVideoVAE: quant convs,
temporal chunking, tiling), modeling_enc_dec.py (CausalVaeEncoder / CausalVaeDecoder), modeling_block.py
(DownEncoderBlockCausal3D, UpDecoderBlockCausal3D, CausalUNetMidBlock2D), modeling_resnet.py (CausalResnetBlock3D and
the four resamplers) and modeling_causal_conv.py (CausalConv3d, CausalGroupNorm). Module names, and so the
state-dict keys, are the release's; the code is this project's. The suite's own VAE (vae/model.py) is a different,
configurable design; this module exists to run the published weights (and to test against the release's layout).

Architecture (release config: channels 128/256/512/512, 16 latent channels, SiLU, GroupNorm(32, eps 1e-6) applied
to every frame on its own):

* encoder: conv_in (3 -> 128); four down blocks of 2 residual blocks each (channels 128, 256, 512, 512; a block's
  first residual block changes the width, with a 1x1x1 `conv_shortcut`); blocks 0-2 end with a spatial
  down-sampler (3x3x3 causal conv, stride (1, 2, 2)) followed by a temporal one (3x3x3 causal conv, stride
  (2, 1, 1)); a mid block (residual, single-head self-attention over the pixels of each frame, residual); then
  GroupNorm, SiLU and conv_out to 2 x 16 channels (posterior mean and log-variance), then `quant_conv` (1x1x1).
* decoder: `post_quant_conv` (1x1x1), conv_in (16 -> 512), the mid block, four up blocks of 3 residual blocks
  (channels 512, 512, 256, 128); blocks 0-2 end with a spatial up-sampler (3x3x3 causal conv to 4C channels, then
  depth-to-space over (C, 2, 2): a pixel shuffle, not interpolation; the release's `interpolate=True` is not
  implemented there) and a temporal one (3x3x3 causal conv to 2C channels, depth-to-time over (C, 2), then the
  first output frame is dropped, so 1 + k frames -> 1 + 2k); GroupNorm, SiLU, conv_out (128 -> 3).
* every 3D convolution is causal: the time axis is padded in front with (kernel - 1) frames of zeros (the
  release's `pad_mode` is 'constant'; no replication of frame 0), space symmetrically with zeros. Strided
  temporal convolutions therefore centre latent frame j on input frame 2j: T = 1 + 8k frames -> 1 + k latents,
  and H, W must be multiples of 8.

Temporal chunking (`chunk_frames` > 0) is exact: every causal convolution hands the input frames its next output
still needs to the next chunk (the release keeps the same context in per-layer caches), and normalisation and
attention never mix frames, so chunked == whole clip up to float rounding. Spatial tiling (`tile_sample_size`) is
the release's overlapped-tile blend and, as there, approximate by design; it is off unless asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

# The keyword arguments of the release's CausalVideoVAE.__init__ with their defaults (what its from_pretrained
# accepts from config.json). Architecture keys without a safe default are required below.
RELEASE_CONFIG_DEFAULTS: dict[str, Any] = {
    "encoder_in_channels": 3,
    "encoder_out_channels": 4,
    "encoder_layers_per_block": [2, 2, 2, 2],
    "encoder_down_block_types": ["DownEncoderBlockCausal3D"] * 4,
    "encoder_block_out_channels": [128, 256, 512, 512],
    "encoder_spatial_down_sample": [True, True, True, False],
    "encoder_temporal_down_sample": [True, True, True, False],
    "encoder_block_dropout": [0.0, 0.0, 0.0, 0.0],
    "encoder_act_fn": "silu",
    "encoder_norm_num_groups": 32,
    "encoder_double_z": True,
    "encoder_type": "causal_vae_conv",
    "decoder_in_channels": 4,
    "decoder_out_channels": 3,
    "decoder_layers_per_block": [3, 3, 3, 3],
    "decoder_up_block_types": ["UpDecoderBlockCausal3D"] * 4,
    "decoder_block_out_channels": [128, 256, 512, 512],
    "decoder_spatial_up_sample": [True, True, True, False],
    "decoder_temporal_up_sample": [True, True, True, False],
    "decoder_block_dropout": [0.0, 0.0, 0.0, 0.0],
    "decoder_act_fn": "silu",
    "decoder_norm_num_groups": 32,
    "decoder_type": "causal_vae_conv",
    "sample_size": 256,
    "scaling_factor": 0.18215,
    "add_post_quant_conv": True,
    "interpolate": False,
    "downsample_scale": 8,
}
# The release's defaults for these (4 latent channels, ...) are not the released model's, so a config that omits
# them is almost certainly not the release's config: refuse rather than build a different network.
REQUIRED_CONFIG_KEYS = (
    "encoder_in_channels", "encoder_out_channels", "encoder_layers_per_block", "encoder_block_out_channels",
    "encoder_spatial_down_sample", "encoder_temporal_down_sample",
    "decoder_in_channels", "decoder_out_channels", "decoder_layers_per_block", "decoder_block_out_channels",
    "decoder_spatial_up_sample", "decoder_temporal_up_sample",
)
_PER_LEVEL = {
    "encoder": ("layers_per_block", "down_block_types", "spatial_down_sample", "temporal_down_sample",
                "block_dropout"),
    "decoder": ("layers_per_block", "up_block_types", "spatial_up_sample", "temporal_up_sample", "block_dropout"),
}
_ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU, "relu": nn.ReLU}
NORM_EPS = 1e-6  # every GroupNorm of the release (resnets, attention, conv_norm_out)
TILE_OVERLAP = 0.25  # the release's encode/decode_tile_overlap_factor


def release_config(raw: dict, source: str | Path = "config.json") -> dict[str, Any]:
    """Validate a release config.json (the keys of the authors' CausalVideoVAE.__init__; diffusers' `_...` meta
    keys ignored) and fill the optional keys with the authors' defaults. ValueError names `source` and the key.

    Accepted but, as in the release, without effect on the network: encoder_double_z and add_post_quant_conv (both
    always on there), encoder_type / decoder_type, sample_size and scaling_factor (the pipeline normalises with its
    own constants, OFFICIAL_NORMALIZATION of vae/handle.py), interpolate (True is unimplemented there and both of
    the authors' loaders force False)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in RELEASE_CONFIG_DEFAULTS)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for the release's CausalVideoVAE; accepted: "
                         f"{sorted(RELEASE_CONFIG_DEFAULTS)}")
    for key in REQUIRED_CONFIG_KEYS:
        if key not in raw:
            raise ValueError(f"{source}: missing required key {key!r} (the release's causal_video_vae/config.json "
                             "has it)")
    cfg = {**RELEASE_CONFIG_DEFAULTS, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    for part, keys in _PER_LEVEL.items():
        widths = cfg[f"{part}_block_out_channels"]
        if not isinstance(widths, (list, tuple)) or not widths or not all(isinstance(c, int) for c in widths):
            raise ValueError(f"{source}: {part}_block_out_channels must be a non-empty list of ints, got {widths!r}")
        levels = len(widths)
        for k in keys:
            name = f"{part}_{k}"
            if not isinstance(cfg[name], (list, tuple)) or len(cfg[name]) != levels:
                raise ValueError(f"{source}: {name} must be a list with one entry per level ({levels}, as "
                                 f"{part}_block_out_channels), got {cfg[name]!r}")
            cfg[name] = list(cfg[name])
        groups = cfg[f"{part}_norm_num_groups"]
        bad = [c for c in cfg[f"{part}_block_out_channels"] if c % groups]
        if bad:
            raise ValueError(f"{source}: {part}_norm_num_groups={groups} does not divide channel widths {bad} of "
                             f"{part}_block_out_channels")
        if cfg[f"{part}_act_fn"] not in _ACTIVATIONS:
            raise ValueError(f"{source}: {part}_act_fn={cfg[f'{part}_act_fn']!r} not supported; one of "
                             f"{sorted(_ACTIVATIONS)}")
    for name, want in (("encoder_down_block_types", "DownEncoderBlockCausal3D"),
                       ("decoder_up_block_types", "UpDecoderBlockCausal3D")):
        # the release's 2D block variants cannot run inside its causal encoder/decoder either
        if any(t != want for t in cfg[name]):
            raise ValueError(f"{source}: {name}={cfg[name]!r}; only {want!r} is supported (as in the release)")
    if cfg["decoder_in_channels"] != cfg["encoder_out_channels"]:
        raise ValueError(f"{source}: decoder_in_channels={cfg['decoder_in_channels']} must equal "
                         f"encoder_out_channels={cfg['encoder_out_channels']} (the latent width)")
    for enc, dec in (("encoder_spatial_down_sample", "decoder_spatial_up_sample"),
                     ("encoder_temporal_down_sample", "decoder_temporal_up_sample")):
        if sum(map(bool, cfg[enc])) != sum(map(bool, cfg[dec])):
            raise ValueError(f"{source}: {enc} and {dec} must down- and up-sample the same number of times")
    return cfg


class _Stream:
    """Context carried from one temporal chunk to the next: the trailing input frames of each causal conv."""

    def __init__(self):
        self.first = True
        self.tails: dict[nn.Module, torch.Tensor] = {}


class CausalConv3d(nn.Module):
    """Release `CausalConv3d`: zero padding of (k_t - 1) frames in front in time, symmetric zeros in space
    (submodule `conv`, as in the release's keys)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.kernel_t, self.stride_t, self.pad_s = kernel, stride[0], kernel // 2
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        k = self.kernel_t
        past = stream.tails.pop(self, None) if stream is not None else None
        x = F.pad(x, (0, 0, 0, 0, k - 1, 0)) if past is None else torch.cat([past, x], dim=2)
        if stream is not None and k > 1:
            # keep the frames the next output window starts with: right for any chunk length and stride
            start = ((x.shape[2] - k) // self.stride_t + 1) * self.stride_t
            stream.tails[self] = x[:, :, start:].clone()
        p = self.pad_s
        return self.conv(F.pad(x, (p, p, p, p)))


class FrameGroupNorm(nn.GroupNorm):
    """Release `CausalGroupNorm`: GroupNorm statistics per frame, so no frame sees another."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        y = super().forward(x.transpose(1, 2).reshape(B * T, C, H, W))
        return y.reshape(B, T, C, H, W).transpose(1, 2)


class ResnetBlock(nn.Module):
    """Release `CausalResnetBlock3D` (pre-norm, no time embedding, output scale 1)."""

    def __init__(self, cin: int, cout: int, groups: int, act: str, dropout: float):
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, cin, eps=NORM_EPS)
        self.conv1 = CausalConv3d(cin, cout)
        self.norm2 = FrameGroupNorm(groups, cout, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(cout, cout)
        self.nonlinearity = _ACTIVATIONS[act]()
        self.conv_shortcut = CausalConv3d(cin, cout, kernel=1) if cin != cout else None

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)), stream)
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))), stream)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x, stream)
        return x + h


class FrameSelfAttention(nn.Module):
    """The mid block's attention (diffusers `Attention` as the release configures it: one head of the full width,
    GroupNorm on the input, biased projections, residual): tokens are the pixels of one frame."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, C, H * W)
        h = self.group_norm(frames).transpose(1, 2)  # (B*T, HW, C)
        q, k, v = (proj(h).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)
        h = self.to_out[1](self.to_out[0](h)).transpose(1, 2)
        return (frames + h).reshape(B, T, C, H, W).transpose(1, 2)


class MidBlock(nn.Module):
    """Release `CausalUNetMidBlock2D` with one layer: resnet, frame attention, resnet."""

    def __init__(self, channels: int, groups: int, act: str, dropout: float):
        super().__init__()
        self.attentions = nn.ModuleList([FrameSelfAttention(channels, groups)])
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups, act, dropout) for _ in range(2)])

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        x = self.resnets[0](x, stream)
        return self.resnets[1](self.attentions[0](x), stream)


class SpatialDownsample(nn.Module):
    """Release `CausalDownsample2x`: causal 3x3x3 conv with stride (1, 2, 2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, stride=(1, 2, 2))

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        return self.conv(x, stream)


class TemporalDownsample(nn.Module):
    """Release `CausalTemporalDownsample2x`: causal 3x3x3 conv with stride (2, 1, 1); 1 + 2k -> 1 + k frames."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        return self.conv(x, stream)


class SpatialUpsample(nn.Module):
    """Release `CausalUpsample2x`: causal conv to 4C channels, then (C, 2, 2) depth-to-space per frame."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, 4 * channels)

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        h = self.conv(x, stream)
        B, C4, T, H, W = h.shape
        # pixel_shuffle's channel order (c, i, j) is the release's rearrange '(c p1 p2)'
        h = F.pixel_shuffle(h.transpose(1, 2).reshape(B * T, C4, H, W), 2)
        return h.reshape(B, T, C4 // 4, 2 * H, 2 * W).transpose(1, 2)


class TemporalUpsample(nn.Module):
    """Release `CausalTemporalUpsample2x`: causal conv to 2C channels, (C, 2) depth-to-time, and the first output
    frame dropped in the first chunk, so the latent frame 0 stays one frame: 1 + k -> 1 + 2k."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, 2 * channels)

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        h = self.conv(x, stream)
        B, C2, T, H, W = h.shape
        h = h.reshape(B, C2 // 2, 2, T, H, W).transpose(2, 3).reshape(B, C2 // 2, 2 * T, H, W)
        return h[:, :, 1:] if stream is None or stream.first else h


class DownBlock(nn.Module):
    """Release `DownEncoderBlockCausal3D`: residual blocks, then optional spatial and temporal down-samplers."""

    def __init__(self, cin: int, cout: int, layers: int, spatial: bool, temporal: bool, groups: int, act: str,
                 dropout: float):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups, act, dropout)
                                      for i in range(layers)])
        self.downsamplers = nn.ModuleList([SpatialDownsample(cout)]) if spatial else None
        self.temporal_downsamplers = nn.ModuleList([TemporalDownsample(cout)]) if temporal else None

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        for m in [*self.resnets, *(self.downsamplers or []), *(self.temporal_downsamplers or [])]:
            x = m(x, stream)
        return x


class UpBlock(nn.Module):
    """Release `UpDecoderBlockCausal3D`: residual blocks, then optional spatial and temporal up-samplers."""

    def __init__(self, cin: int, cout: int, layers: int, spatial: bool, temporal: bool, groups: int, act: str,
                 dropout: float):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(cin if i == 0 else cout, cout, groups, act, dropout)
                                      for i in range(layers)])
        self.upsamplers = nn.ModuleList([SpatialUpsample(cout)]) if spatial else None
        self.temporal_upsamplers = nn.ModuleList([TemporalUpsample(cout)]) if temporal else None

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        for m in [*self.resnets, *(self.upsamplers or []), *(self.temporal_upsamplers or [])]:
            x = m(x, stream)
        return x


class Encoder(nn.Module):
    """Release `CausalVaeEncoder` (always double_z: mean and log-variance)."""

    def __init__(self, cfg: dict):
        super().__init__()
        ch, g, act = cfg["encoder_block_out_channels"], cfg["encoder_norm_num_groups"], cfg["encoder_act_fn"]
        drop = cfg["encoder_block_dropout"]
        self.conv_in = CausalConv3d(cfg["encoder_in_channels"], ch[0])
        self.down_blocks = nn.ModuleList([
            DownBlock(ch[max(i - 1, 0)], ch[i], cfg["encoder_layers_per_block"][i],
                      bool(cfg["encoder_spatial_down_sample"][i]), bool(cfg["encoder_temporal_down_sample"][i]),
                      g, act, drop[i]) for i in range(len(ch))])
        self.mid_block = MidBlock(ch[-1], g, act, drop[-1])
        self.conv_norm_out = FrameGroupNorm(g, ch[-1], eps=NORM_EPS)
        self.conv_act = nn.SiLU()  # the release hard-codes SiLU here whatever act_fn says
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg["encoder_out_channels"])

    def forward(self, x: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        x = self.conv_in(x, stream)
        for block in self.down_blocks:
            x = block(x, stream)
        x = self.mid_block(x, stream)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)), stream)


class Decoder(nn.Module):
    """Release `CausalVaeDecoder`."""

    def __init__(self, cfg: dict):
        super().__init__()
        ch, g, act = cfg["decoder_block_out_channels"], cfg["decoder_norm_num_groups"], cfg["decoder_act_fn"]
        drop, rev = cfg["decoder_block_dropout"], list(reversed(cfg["decoder_block_out_channels"]))
        self.conv_in = CausalConv3d(cfg["decoder_in_channels"], ch[-1])
        self.mid_block = MidBlock(ch[-1], g, act, drop[-1])
        self.up_blocks = nn.ModuleList([
            UpBlock(rev[max(i - 1, 0)], rev[i], cfg["decoder_layers_per_block"][i],
                    bool(cfg["decoder_spatial_up_sample"][i]), bool(cfg["decoder_temporal_up_sample"][i]),
                    g, act, drop[i]) for i in range(len(rev))])
        self.conv_norm_out = FrameGroupNorm(g, ch[0], eps=NORM_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = CausalConv3d(ch[0], cfg["decoder_out_channels"])

    def forward(self, z: torch.Tensor, stream: _Stream | None = None) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z, stream), stream)
        for block in self.up_blocks:
            x = block(x, stream)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)), stream)


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> None:
    """Release `blend_v` / `blend_h`, in place on b: b's first `extent` rows/columns fade in from a's last."""
    e = min(a.shape[dim], b.shape[dim], extent)
    if e <= 0:
        return
    shape = [1] * b.ndim
    shape[dim] = e
    w = (torch.arange(e, dtype=b.dtype, device=b.device) / e).view(shape)
    head = b.narrow(dim, 0, e)
    head.copy_(a.narrow(dim, a.shape[dim] - e, e) * (1 - w) + head * w)


def _tiled(fn, x: torch.Tensor, size: int, step: int, blend: int, keep: int) -> torch.Tensor:
    """Release `tiled_encode` / `tiled_decode`: run `fn` on size x size tiles every `step` pixels, blend each
    output tile into its (already blended) upper and left neighbours over `blend` pixels, keep keep x keep of each.
    Tiles are processed row-major and blended in place, as in the release, so the result is the release's."""
    rows = [[fn(x[:, :, :, i:i + size, j:j + size]) for j in range(0, x.shape[4], step)]
            for i in range(0, x.shape[3], step)]
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if i > 0:
                _blend(rows[i - 1][j], tile, blend, dim=3)
            if j > 0:
                _blend(row[j - 1], tile, blend, dim=4)
    return torch.cat([torch.cat([t[:, :, :, :keep, :keep] for t in row], dim=4) for row in rows], dim=3)


class OfficialCausalVAE(nn.Module):
    """The release's CausalVideoVAE (modeling_causal_vae.py) with the suite's VAE interface: `encode` gives the
    posterior mean (B, 16, 1 + k, H/8, W/8) of a video (B, 3, 1 + 8k, H, W) in [-1, 1]; `decode` inverts it.

    Build with a release config dict (see `release_config`); `tile_sample_size` > 0 turns on the release's
    spatial tiling for inputs larger than that many pixels (the pipeline uses 256 or 512)."""

    def __init__(self, config: dict, source: str | Path = "config"):
        super().__init__()
        cfg = release_config(config, source)
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        z = cfg["encoder_out_channels"]
        self.quant_conv = CausalConv3d(2 * z, 2 * z, kernel=1)
        self.post_quant_conv = CausalConv3d(z, z, kernel=1)
        self.latent_channels = z
        self.spatial_compression = 2 ** sum(map(bool, cfg["encoder_spatial_down_sample"]))
        self.temporal_compression = 2 ** sum(map(bool, cfg["encoder_temporal_down_sample"]))
        self.tile_sample_size = 0

    # -- shapes --------------------------------------------------------------------------------------------
    def check_video(self, video: torch.Tensor) -> None:
        """ValueError unless video is (B, C_in, 1 + k*T_c, H, W) with H, W multiples of the spatial compression."""
        s, t, cin = self.spatial_compression, self.temporal_compression, self.config["encoder_in_channels"]
        if video.ndim != 5 or video.shape[1] != cin:
            raise ValueError(f"video of shape {tuple(video.shape)}: expected (B, {cin}, T, H, W)")
        T, H, W = video.shape[2:]
        if (T - 1) % t or H % s or W % s:
            raise ValueError(f"video of shape {tuple(video.shape)} (T={T}, H={H}, W={W}): the official VAE needs "
                             f"T = 1 + {t}k frames and H, W divisible by {s}")

    def latent_frames(self, frames: int) -> int:
        """1 + k latent frames of a 1 + 8k-frame clip (ValueError otherwise), as the suite VAE's method."""
        t = self.temporal_compression
        if frames < 1 or (frames - 1) % t:
            raise ValueError(f"a clip of {frames} frames is not 1 + k*{t} (the official VAE's temporal compression)")
        return 1 + (frames - 1) // t

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"latents of shape {tuple(z.shape)}: expected (B, {self.latent_channels}, T, h, w)")

    def _tile(self, tile_sample_size: int | None) -> int:
        """The tile size in pixels (0 = no tiling); the release's overlap of 1/4 lines the tiles up with the kept
        parts of the output tiles only for multiples of 4 x downsample_scale (its 256 and 512 are)."""
        tile = self.tile_sample_size if tile_sample_size is None else tile_sample_size
        unit = 4 * self.config["downsample_scale"]
        if tile < 0 or tile % unit:
            raise ValueError(f"tile_sample_size={tile}: must be 0 (no tiling) or a multiple of {unit} pixels")
        return tile

    # -- whole clip / temporal chunks ---------------------------------------------------------------------
    def _moments(self, x: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        """quant_conv(encoder(x)): (B, 2 * latent, 1 + k, h, w), in causal chunks of `chunk_frames` latent frames."""
        T = self.temporal_compression
        if chunk_frames <= 0 or 1 + (chunk_frames - 1) * T >= x.shape[2]:
            return self.quant_conv(self.encoder(x))
        stream, out, start = _Stream(), [], 0
        while start < x.shape[2]:
            n = 1 + (chunk_frames - 1) * T if stream.first else chunk_frames * T
            out.append(self.quant_conv(self.encoder(x[:, :, start:start + n], stream), stream))
            start, stream.first = start + n, False
        return torch.cat(out, dim=2)

    def _decode(self, z: torch.Tensor, chunk_frames: int) -> torch.Tensor:
        if chunk_frames <= 0 or chunk_frames >= z.shape[2]:
            return self.decoder(self.post_quant_conv(z))
        stream, out = _Stream(), []
        for start in range(0, z.shape[2], chunk_frames):
            out.append(self.decoder(self.post_quant_conv(z[:, :, start:start + chunk_frames], stream), stream))
            stream.first = False
        return torch.cat(out, dim=2)

    # -- public interface ----------------------------------------------------------------------------------
    def encode_moments(self, video: torch.Tensor, chunk_frames: int = 0,
                       tile_sample_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, logvar) of the release's DiagonalGaussianDistribution (logvar clamped to [-30, 20])."""
        self.check_video(video)
        tile = self._tile(tile_sample_size)
        if tile and max(video.shape[3:]) > tile:
            latent_tile = tile // self.config["downsample_scale"]
            blend = int(latent_tile * TILE_OVERLAP)
            moments = _tiled(lambda x: self._moments(x, chunk_frames), video, tile, int(tile * (1 - TILE_OVERLAP)),
                             blend, latent_tile - blend)
        else:
            moments = self._moments(video, chunk_frames)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, video: torch.Tensor, chunk_frames: int = 0, sample: bool = False,
               generator: torch.Generator | None = None, tile_sample_size: int | None = None) -> torch.Tensor:
        """Raw latents (B, 16, 1 + k, H/8, W/8) of a video (B, 3, 1 + 8k, H, W) in [-1, 1]: the posterior mean
        (release `encode(...).latent_dist.mode()`), or a sample of it. `chunk_frames` > 0 encodes causal chunks
        of that many latent frames (exact); `tile_sample_size` overrides the model's tiling setting."""
        mean, logvar = self.encode_moments(video, chunk_frames, tile_sample_size)
        if not sample:
            return mean
        return mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, device=mean.device,
                                                            dtype=mean.dtype)

    def decode(self, z: torch.Tensor, chunk_frames: int = 0, tile_sample_size: int | None = None) -> torch.Tensor:
        """Video (B, 3, 1 + 8(T - 1), 8h, 8w) in [-1, 1] space (unclamped) of raw latents (B, 16, T, h, w); release
        `decode(z).sample`. `chunk_frames` > 0 decodes causal chunks of that many latent frames (exact, as the
        release's `temporal_chunk`); `tile_sample_size` overrides the model's tiling setting."""
        self._check_latent(z)
        tile = self._tile(tile_sample_size)
        latent_tile = tile // self.config["downsample_scale"] if tile else 0
        if latent_tile and max(z.shape[3:]) > latent_tile:
            blend = int(tile * TILE_OVERLAP)
            return _tiled(lambda t: self._decode(t, chunk_frames), z, latent_tile,
                          int(latent_tile * (1 - TILE_OVERLAP)), blend, tile - blend)
        return self._decode(z, chunk_frames)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: decode(encode(video))."""
        return self.decode(self.encode(video))


# -- release folders -----------------------------------------------------------------------------------------

def is_official_vae_folder(folder: str | Path) -> bool:
    """True when folder/config.json is a release CausalVideoVAE config: it has the authors' encoder_/decoder_
    keys, which the suite's own VAE config (channels, layers_per_block, ...) lacks."""
    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and "encoder_block_out_channels" in raw and "decoder_block_out_channels" in raw


def read_release_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of folder/*.safetensors (shards merged), or of diffusion_pytorch_model.bin when there is no
    safetensors file (torch.load with weights_only=True)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        sd: dict[str, torch.Tensor] = {}
        for f in files:
            part = load_file(str(f))
            dup = sorted(set(part) & set(sd))
            if dup:
                raise ValueError(f"{f}: key(s) {dup[:8]} already in another safetensors file of {folder}")
            sd.update(part)
        return sd
    binary = folder / "diffusion_pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no weights (*.safetensors or diffusion_pytorch_model.bin)")


def _names(keys: list[str], limit: int = 8) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_strictly(model: nn.Module, sd: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load `sd` into `model` (as float32, assigned, so a model built on the meta device works) or raise naming up
    to 8 missing, unexpected or mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): " + _names(
            [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]))
    if problems:
        raise ValueError(f"{source}: weights do not match the release's CausalVideoVAE built from its config.json: "
                         + "; ".join(problems))
    model.load_state_dict({k: v.to(torch.float32).contiguous() for k, v in sd.items()}, strict=True, assign=True)


def build_official_vae(folder: str | Path) -> OfficialCausalVAE:
    """The network of folder/config.json on the meta device (no weights yet)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected the release's causal_video_vae/ folder)")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    with torch.device("meta"):
        return OfficialCausalVAE(raw, path)


def parameter_count(config: dict) -> int:
    """Parameters of the network of a release config, counted on the meta device."""
    with torch.device("meta"):
        return sum(p.numel() for p in OfficialCausalVAE(config).parameters())
