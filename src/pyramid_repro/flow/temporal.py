"""The temporal pyramid (docs/method.md §3 and §9): compressed, corrupted history of earlier latent frames.

Model-agnostic: returns a list of per-frame tensors at their resolutions; models/ packs them into tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyramid_repro.flow.paths import pyramid_latents


@dataclass
class HistoryFrame:
    latent: torch.Tensor  # (B, C, h, w)
    stage: int  # pyramid stage whose resolution the frame has (K-1 = full resolution)
    frame_index: int  # position of the frame in the clip (0 = first latent frame)


def history_stages(n_history: int, stage: int, stages: int, temporal_pyramid: bool = True) -> list[int]:
    """Resolution (as a stage index) of each history frame, oldest first, for a current frame at `stage`.

    Temporal pyramid: the newest history frame at the current stage's resolution, the one before it one stage
    coarser, every older one at the coarsest. Without it (ablation) history stays uncompressed: full resolution.
    """
    if not temporal_pyramid:
        return [stages - 1] * n_history
    out = []
    for age in range(n_history, 0, -1):  # age 1 = newest
        out.append(stage if age == 1 else (max(stage - 1, 0) if age == 2 else 0))
    return out


def build_history(frames: torch.Tensor, stage: int, stages: int, temporal_pyramid: bool = True,
                  corruption: tuple[float, float] = (0.0, 0.0),
                  generator: torch.Generator | None = None) -> list[HistoryFrame]:
    """History of clean full-resolution latent frames (B, C, T_hist, H, W) for a current frame at `stage`.

    Each frame is downsampled to its pyramid level and corrupted h <- sigma_c n + (1 - sigma_c) h with one
    sigma_c ~ U[corruption] per sample (shared by all history frames of that sample), as in training.
    """
    B, _, T = frames.shape[:3]
    levels = history_stages(T, stage, stages, temporal_pyramid)
    lo, hi = corruption
    sigma = lo + (hi - lo) * torch.rand(B, generator=generator, device=frames.device, dtype=frames.dtype)
    out = []
    for i, lvl in enumerate(levels):
        h = pyramid_latents(frames[:, :, i], stages)[lvl]
        if hi > 0:
            n = torch.randn(h.shape, generator=generator, device=h.device, dtype=h.dtype)
            s = sigma.view(B, 1, 1, 1)
            h = s * n + (1.0 - s) * h
        out.append(HistoryFrame(h, lvl, i))
    return out
