"""Generation with a trained DiT (docs/method.md §2-§3): autoregressive through the spatial pyramid with the
compressed history (pyramid experiments), or the whole clip at once (full-sequence baseline).

Text-to-video starts from noise for the first latent frame; image-to-video takes a given first latent frame.
Classifier-free guidance batches the conditional and unconditional passes into one forward, with separate scales
for the first frame and later frames (docs/method.md §2.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pyramid_repro.config import Config
from pyramid_repro.generation.capture import CaptureSession
from pyramid_repro.flow import PyramidSchedule, build_history, guided, sample
from pyramid_repro.models.attention import resolve_kernel


@dataclass
class TextCondition:
    """Encoded prompts: tokens (B, L, D), mask (B, L) bool, pooled (B, P)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def cat(self, other: "TextCondition") -> "TextCondition":
        return TextCondition(torch.cat([self.tokens, other.tokens]), torch.cat([self.mask, other.mask]),
                             torch.cat([self.pooled, other.pooled]))

    def index(self, idx: torch.Tensor | slice | list[int]) -> "TextCondition":
        return TextCondition(self.tokens[idx], self.mask[idx], self.pooled[idx])

    def repeat(self, n: int) -> "TextCondition":
        return TextCondition(self.tokens.expand(n, -1, -1), self.mask.expand(n, -1), self.pooled.expand(n, -1))


def kv_cache_exact(model: torch.nn.Module) -> bool:
    """Whether the history KV cache gives this model's own result (to float tolerance), as the model says
    (models/base.py `DiTModel.kv_cache_exact`): a causal PyramidDiT, whose context is conditioned as clean; not a
    bidirectional one, nor the authors' model, which modulates the context with the current timestep, nor a model
    that does not say."""
    return bool(getattr(model, "kv_cache_exact", False))


def model_velocity(model: torch.nn.Module, current: torch.Tensor, timestep: torch.Tensor, text: TextCondition,
                   history: list[torch.Tensor], full_size: tuple[int, int], context=None, plan=None) -> torch.Tensor:
    """One DiT call: velocity for `current` (B, C, T, h, w) given history frames (oldest first) and text, or
    given the cached keys/values of text + history (`context`); `plan`: the model's ForwardPlan for these shapes
    (PyramidDiT.plan), made once per stage."""
    extra = {} if plan is None else {"plan": plan}
    return model(history=history, current=current, timestep=timestep, tokens=text.tokens, text_mask=text.mask,
                 pooled=text.pooled, full_size=full_size, context=context, **extra)


def _cfg_velocity(model: torch.nn.Module, text: TextCondition, empty: TextCondition, scale: float,
                  history_for_stage: Callable[[int], list[torch.Tensor]], full_size: tuple[int, int],
                  kv_cache: bool = False, capture: CaptureSession | None = None):
    """Velocity callable for flow.sample with classifier-free guidance in one batched forward.

    Per stage, before its first Euler step, it prepares what no step changes: the history (doubled for the
    unconditional half), with `kv_cache` the text + history keys/values (model.encode_context), and the model's
    ForwardPlan (positions, mask, RoPE; models/mmdit.py). A step is then only device work on `x` and the timestep,
    which `capture` (generation/capture.py) records at the stage's first step and replays at the others."""
    B = len(text)
    guidance = scale != 1.0
    both = text.cat(empty.repeat(B)) if guidance else text
    planner = getattr(model, "plan", None)  # the MM-DiTs; other velocity models build what they need per call
    prepared: dict[int, tuple] = {}
    steps: dict[int, Callable] = {}

    def prepare(x: torch.Tensor, stage: int) -> tuple:
        if stage not in prepared:
            prepared.clear()  # stages only go forward: drop the previous stage's history and cache
            hist = history_for_stage(stage)
            if guidance:
                hist = [torch.cat([h, h]) for h in hist]
            ctx = model.encode_context(hist, both.tokens, both.mask, both.pooled, full_size) if kv_cache else None
            if ctx is not None:
                hist = []  # the forward reads the cache instead
            plan = None
            if planner is not None:
                plan = planner(hist, (len(both), *x.shape[1:]), both.mask, full_size, ctx, x.device, x.dtype)
            prepared[stage] = (hist, ctx, plan)
        return prepared[stage]

    def step(x: torch.Tensor, timestep: torch.Tensor, stage: int) -> torch.Tensor:
        hist, ctx, plan = prepared[stage]
        if guidance:
            x, timestep = torch.cat([x, x]), torch.cat([timestep, timestep])
        v = model_velocity(model, x, timestep, both, hist, full_size, ctx, plan)
        if not guidance:
            return v
        vc, vu = v[:B], v[B:]
        return guided(lambda *_: vc, lambda *_: vu, scale)(x, timestep, stage)

    def velocity(x: torch.Tensor, timestep: torch.Tensor, stage: int) -> torch.Tensor:
        prepare(x, stage)
        if capture is None:
            return step(x, timestep, stage)
        if stage not in steps:
            for old in steps.values():  # free the previous stage's graph before capturing into the shared pool
                getattr(old, "release", lambda: None)()
            steps.clear()
            steps[stage] = capture.wrap(lambda xs, ts, stage=stage: step(xs, ts, stage))
        return steps[stage](x, timestep)

    return velocity


@torch.no_grad()
def generate_latents(model: torch.nn.Module, cfg: Config, text: TextCondition, empty: TextCondition,
                     latent_frames: int, latent_size: tuple[int, int], generator: torch.Generator | None = None,
                     first_frame: torch.Tensor | None = None,
                     progress: Callable[[int], None] | None = None, kv_cache: bool = False,
                     capture: str | CaptureSession = "none") -> torch.Tensor:
    """Normalised latents (B, C, T, H, W) for the prompts in `text`.

    Pyramid (cfg.pyramid.stages > 1): frame by frame; each frame runs the pyramid sampler (per-stage Euler
    steps, jump renoising with corrective noise unless switched off) with the clean history of the frames
    generated so far, compressed by the temporal pyramid as in training. `first_frame` (B, C, H, W) makes it
    image-to-video. Full sequence (stages == 1): all frames at once with one Euler loop. `kv_cache` reuses the
    history's keys/values across the Euler steps of a frame's stage (same result to float tolerance). `capture`
    (generation/capture.py: ``none``, ``cuda-graph`` on CUDA, ``replay-emulation`` for tests, or a CaptureSession)
    records each (frame, stage)'s velocity call at its first Euler step and replays it at the others (same
    result: the same kernels on the same values).
    """
    p = cfg.pyramid
    schedule = PyramidSchedule.from_config(p)
    B, C = len(text), cfg.vae.latent_channels
    H, W = latent_size
    dev = text.tokens.device
    session = capture if isinstance(capture, CaptureSession) else CaptureSession(capture, dev)
    if session.backend == "replay-emulation" and resolve_kernel(getattr(model, "attention_kernel", "sdpa"),
                                                                dev) == "flex":
        raise ValueError("capture='replay-emulation' records the velocity's ops under a dispatch mode, where "
                         "FlexAttention cannot run: set model.attention_kernel = 'sdpa'")
    kw = dict(generator=generator, corrective_noise=p.corrective_noise, renoise=p.renoise,
              min_sigma=p.sampler.min_sigma, device=dev)
    if schedule.stages == 1:
        vel = _cfg_velocity(model, text, empty, p.sampler.guidance_video, lambda k: [], (H, W), capture=session)
        out = sample(vel, (B, C, latent_frames, H, W), schedule, p.stage_steps(True), **kw)
        if progress:
            progress(latent_frames)
        return out
    frames: list[torch.Tensor] = []
    for f in range(latent_frames):
        if f == 0 and first_frame is not None:
            frames.append(first_frame.to(dev))
        else:
            past = torch.stack(frames, dim=2) if frames else None
            cache: dict[int, list[torch.Tensor]] = {}

            def history_for_stage(k: int, past=past, cache=cache) -> list[torch.Tensor]:
                if past is None:
                    return []
                if k not in cache:  # clean history at inference (corruption is a training-time augmentation)
                    cache[k] = [h.latent for h in build_history(past, k, schedule.stages, p.temporal_pyramid)]
                return cache[k]

            scale = p.sampler.guidance_first_frame if f == 0 else p.sampler.guidance_video
            vel = _cfg_velocity(model, text, empty, scale, history_for_stage, (H, W), kv_cache, session)
            x = sample(vel, (B, C, 1, H, W), schedule, p.stage_steps(f == 0), **kw)
            frames.append(x[:, :, 0])
        if progress:
            progress(1)
    return torch.stack(frames, dim=2)
