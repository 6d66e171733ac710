"""Training sequences as the paper builds them (docs/method.md §3 and §9).

A batch of clean, normalised latent clips (B, C, T, H, W) becomes one stage-homogeneous training batch:

* pyramid (K > 1 stages): a stage k ~ stage weights and a frame j ~ U{0..T-1} are drawn per batch. Frame j is the
  frame being learnt, put on stage k's flow path (`flow.training_path`); frames 0..j-1 are its history,
  compressed by the temporal pyramid (newest at stage k's resolution, the one before one stage coarser, all older
  at the coarsest) and corrupted with sigma_c ~ U[history_corruption] (`flow.build_history`). This matches the
  official trainer, which learns the last unit of clips whose length varies from step to step so that the token
  count stays roughly constant; one difference we choose: all samples of a batch share (k, j) so the batch packs
  into dense tensors (the official code splits a batch into stage groups by its sample ratios instead).
* full sequence (K = 1): every frame at full resolution on one flow path with its own t per sample, no history;
  the model sees all T frames at once (its attention mask comes from `model.attention`).

Images are clips with T = 1 (stage 1 of the curriculum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pyramid_repro.config import PyramidConfig
from pyramid_repro.device import host_int
from pyramid_repro.flow import PyramidSchedule, build_history, cost, sample_stage, training_path


@dataclass
class TrainBatch:
    history: list[torch.Tensor]  # oldest first, each (B, C, h_i, w_i)
    current: torch.Tensor  # (B, C, T_cur, h, w) noisy input at the stage resolution
    target: torch.Tensor  # velocity target, same shape as current
    timestep: torch.Tensor  # (B,) global timestep the model is conditioned on
    stage: int
    frame: int  # index of the first current frame in the clip
    history_stages: list[int] = field(default_factory=list)

    def video_tokens(self, patch: int) -> int:
        """Video tokens the transformer processes for this batch (history + current), with square patches of
        `patch` latent pixels (flow/cost.py's tokens_per_frame for every frame)."""
        B = self.current.shape[0]
        hist = sum(cost.tokens_per_frame(h.shape[-2], h.shape[-1], patch) for h in self.history)
        cur = self.current.shape[2] * cost.tokens_per_frame(self.current.shape[-2], self.current.shape[-1], patch)
        return B * (hist + cur)


def draw_stage_frame(frames: int, schedule: PyramidSchedule, pyramid: PyramidConfig,
                     generator: torch.Generator | None = None) -> tuple[int, int]:
    """The (pyramid stage k, learnt latent frame j) of one batch: k ~ stage weights, j ~ U{0..frames-1}; (0, 0)
    for the full sequence, which draws neither."""
    if schedule.stages == 1:
        return 0, 0
    stage = sample_stage(pyramid.stage_weights or [1.0] * schedule.stages, generator)
    return stage, host_int(frames, generator)


def draw_group_stage_frames(frames: int, schedule: PyramidSchedule, pyramid: PyramidConfig, group: int,
                            generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """The (stage, frame) units of the `group` processes of a video sync group, which learn the same clips
    (train.video_sync_group; the authors' --sync_video_input), one per position in the group. Systematic sampling:
    the units (k, j) lie stage-major on [0, 1), each as long as its probability under draw_stage_frame
    (w_k / sum(w) / frames); one u ~ U[0, 1) is drawn and position p takes the unit at (u + p / group) mod 1.
    So every position's unit has draw_stage_frame's distribution (stage ~ weights, frame uniform), and a unit of
    probability at most 1 / group goes to at most one position: the positions learn different units whenever
    every unit is that light (with uniform weights: whenever group <= stages x frames). A larger group, or a
    heavier unit, repeats units, each unit going to floor or ceil of group x its probability positions. The
    full sequence has one unit, (0, 0): every position learns the whole clip, with its own noise."""
    if schedule.stages == 1:
        return [(0, 0)] * group
    w = torch.as_tensor(pyramid.stage_weights or [1.0] * schedule.stages, dtype=torch.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"stage weights {w.tolist()} must be non-negative with a positive sum")
    ends = torch.cumsum((w / w.sum()).repeat_interleave(frames) / frames, 0)
    dev = generator.device if generator is not None else torch.device("cpu")
    u = float(torch.rand((), generator=generator, device=dev, dtype=torch.float64))
    points = torch.tensor([(u + p / group) % 1.0 for p in range(group)], dtype=torch.float64)
    units = torch.searchsorted(ends, points, right=True).clamp(max=len(ends) - 1).tolist()
    return [divmod(i, frames) for i in units]


def make_batch(latents: torch.Tensor, schedule: PyramidSchedule, pyramid: PyramidConfig,
               generator: torch.Generator | None = None, draw: tuple[int, int] | None = None) -> TrainBatch:
    """Build one training batch from clean latents (B, C, T, H, W); see the module docstring. `draw`: the
    (stage, frame) from `draw_stage_frame`, when it was drawn before the batch's rows (token-packed
    micro-batches); otherwise drawn here."""
    if latents.dim() != 5:
        raise ValueError(f"latents must be (B, C, T, H, W), got shape {tuple(latents.shape)}")
    B, _, T = latents.shape[:3]
    if schedule.stages == 1:
        s = training_path(latents, schedule, 0, generator)
        return TrainBatch([], s.x_t, s.target, s.timestep, 0, 0)
    stage, frame = draw if draw is not None else draw_stage_frame(T, schedule, pyramid, generator)
    hist = build_history(latents[:, :, :frame], stage, schedule.stages, pyramid.temporal_pyramid,
                         tuple(pyramid.history_corruption), generator) if frame > 0 else []
    s = training_path(latents[:, :, frame], schedule, stage, generator)
    return TrainBatch([h.latent for h in hist], s.x_t.unsqueeze(2), s.target.unsqueeze(2), s.timestep, stage, frame,
                      [h.stage for h in hist])
