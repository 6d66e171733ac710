"""Position encodings and the attention mask (docs/method.md §3).

Spatial: 2D sin-cos on coordinates of the full-resolution patch grid.
* current frames at a coarse stage are *extrapolated*: integer coordinates of the centred crop of the full grid,
  i.e. exactly what a full-resolution grid of that smaller size has (same frequencies, no rescaling);
* history frames are *interpolated*: the full grid's extent resampled to the frame's size, so a compressed history
  frame lines up spatially with the current frame.
The authors' model (docs/method.md §3.6) instead crops one sin-cos table around each grid (`official_pos_table`,
`crop_pos_table`, as diffusers' SD3 PatchEmbed) and gives a coarser history frame the current frame's crop resampled
bilinearly (`history_pos_table`: table *values* interpolated, not sin-cos of interpolated coordinates).
Temporal: 1D rotary embedding (RoPE) of the frame index on queries and keys.
Mask: blockwise causal — a video token sees text and every token of its own and earlier frames; text tokens see
text only (so nothing a video token reads can depend on a later frame). `bidirectional` lets video see all video.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def extrapolated_coords(h: int, w: int, full_h: int, full_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h*w,) row and column coordinates: the centred h x w crop of the full_h x full_w integer grid."""
    r = torch.arange(h, dtype=torch.float64) + (full_h - h) / 2.0
    c = torch.arange(w, dtype=torch.float64) + (full_w - w) / 2.0
    rr, cc = torch.meshgrid(r, c, indexing="ij")
    return rr.flatten(), cc.flatten()


def interpolated_coords(h: int, w: int, full_h: int, full_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h*w,) coordinates of an h x w grid covering the full grid's extent (cell centres, bilinear-aligned)."""
    r = (torch.arange(h, dtype=torch.float64) + 0.5) * (full_h / h) - 0.5
    c = (torch.arange(w, dtype=torch.float64) + 0.5) * (full_w / w) - 0.5
    rr, cc = torch.meshgrid(r, c, indexing="ij")
    return rr.flatten(), cc.flatten()


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) [sin, cos] at frequencies 1 / 10000^(2i/dim) (DiT / MAE)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(rows: torch.Tensor, cols: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, dim) 2D sin-cos embedding: half the channels for rows, half for columns."""
    if dim % 4:
        raise ValueError(f"2D sin-cos needs a hidden size divisible by 4, got {dim}")
    return torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=1).float()


def spatial_embedding(h: int, w: int, full_h: int, full_w: int, dim: int, interpolate: bool,
                      device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(h*w, dim) sin-cos table of an h x w grid placed on the full_h x full_w patch grid (interpolated for
    history frames, extrapolated for current frames), on `device`. Built in float64 on the CPU once per shape
    and device, then reused: a forward pass asks for the same few tables at every call."""
    return _spatial_embedding(h, w, full_h, full_w, dim, interpolate, torch.device(device), dtype)


@functools.lru_cache(maxsize=256)
def _spatial_embedding(h: int, w: int, full_h: int, full_w: int, dim: int, interpolate: bool,
                       device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    fn = interpolated_coords if interpolate else extrapolated_coords
    return sincos_2d(*fn(h, w, full_h, full_w), dim).to(device, dtype)


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
    out = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(gh * gw, -1)


def rope_angles(frame_index: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, head_dim) of a 1D rotary embedding of the frame index (pairs rotated together)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=frame_index.device) / head_dim)
    ang = frame_index.float()[:, None] * freqs[None]
    ang = torch.repeat_interleave(ang, 2, dim=1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, N, head_dim) by per-token angles; tokens with angle 0 (text) are unchanged."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rot = torch.stack([-x2, x1], dim=-1).flatten(-2)
    return x * cos + rot * sin


def attention_mask(frame_of_token: torch.Tensor, text_valid: torch.Tensor, causal: bool = True,
                   text_sees_first_frame: bool = False) -> torch.Tensor:
    """Boolean (B, 1, N, N) mask, True = may attend. Token order: L text tokens then video tokens.

    frame_of_token: (N_video,) frame index of each video token; text_valid: (B, L) False for padding.
    text_sees_first_frame: text tokens also attend to the video tokens of frame 0 (the authors' model, where the
    text stream reads the first frame; this suite's own model lets text see text only).
    """
    B, L = text_valid.shape
    f = frame_of_token
    Nv = f.shape[0]
    vv = (f[None, :] <= f[:, None]) if causal else torch.ones(Nv, Nv, dtype=torch.bool, device=f.device)
    tv = (f == 0)[None, :].expand(L, Nv) if text_sees_first_frame else torch.zeros(L, Nv, dtype=torch.bool,
                                                                                  device=f.device)
    top = torch.cat([torch.ones(L, L, dtype=torch.bool, device=f.device), tv], dim=1)
    bottom = torch.cat([torch.ones(Nv, L, dtype=torch.bool, device=f.device), vv], dim=1)
    m = torch.cat([top, bottom], dim=0)[None].expand(B, -1, -1).clone()
    keys_ok = torch.cat([text_valid, torch.ones(B, Nv, dtype=torch.bool, device=f.device)], dim=1)
    m &= keys_ok[:, None, :]
    # a padded text query still needs one visible key to avoid NaNs: let it see itself
    eye = torch.eye(L + Nv, dtype=torch.bool, device=f.device)[None]
    m |= eye
    return m[:, None]
