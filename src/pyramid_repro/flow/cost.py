"""Cost accounting (docs/method.md §4): tokens, model evaluations, analytic FLOPs and the GPUs' peak FLOP/s.

Pure functions over a schedule and sizes, the one owner of the suite's cost model: the DiT trainer's ledger and
`train.match_compute_to`, the `tokens` command, the GPU-hour audit's projection and MFU, and the benchmarks all
use them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyramid_repro.config import Config, ConfigError, CurriculumStage, ModelConfig, PyramidConfig
from pyramid_repro.flow.temporal import history_stages


def latent_frames(pixel_frames: int, temporal_compression: int) -> int:
    """1 + k*T pixel frames -> 1 + k latent frames (the first frame is encoded alone)."""
    if (pixel_frames - 1) % temporal_compression:
        raise ValueError(f"{pixel_frames} frames is not 1 + k * {temporal_compression}")
    return 1 + (pixel_frames - 1) // temporal_compression


def tokens_per_frame(height: int, width: int, patch: int) -> int:
    """Tokens of one latent frame of size height x width with square patches."""
    if height % patch or width % patch:
        raise ValueError(f"latent {height}x{width} not divisible by patch {patch}")
    return (height // patch) * (width // patch)


def stage_tokens(height: int, width: int, patch: int, stages: int) -> list[int]:
    """Tokens per latent frame at every pyramid stage, coarsest first."""
    return [tokens_per_frame(height >> (stages - 1 - k), width >> (stages - 1 - k), patch) for k in range(stages)]


def pyramid_sample_tokens(height: int, width: int, patch: int, frames: int, stages: int, stage: int,
                          temporal_pyramid: bool = True) -> int:
    """Video tokens of one training sample whose last of `frames` latent frames is learnt at `stage`."""
    per = stage_tokens(height, width, patch, stages)
    hist = history_stages(frames - 1, stage, stages, temporal_pyramid)
    return per[stage] + sum(per[h] for h in hist)


def expected_training_tokens(height: int, width: int, patch: int, frames: int, stages: int,
                             weights: list[float] | None = None, temporal_pyramid: bool = True) -> float:
    """Expected video tokens per training sample under the stage-sampling weights (uniform by default)."""
    w = weights or [1.0] * stages
    tot = sum(w)
    return sum(wk / tot * pyramid_sample_tokens(height, width, patch, frames, stages, k, temporal_pyramid)
               for k, wk in enumerate(w))


def fullseq_training_tokens(height: int, width: int, patch: int, frames: int) -> int:
    """Full-sequence flow matching: every latent frame at full resolution."""
    return frames * tokens_per_frame(height, width, patch)


@dataclass(frozen=True)
class GenerationCost:
    evaluations: int  # model forward passes (with CFG each counts twice)
    tokens: int  # video tokens processed, summed over all forward passes


def pyramid_generation_cost(height: int, width: int, patch: int, frames: int, stages: int,
                            steps_first: list[int], steps_later: list[int], cfg: bool = True,
                            temporal_pyramid: bool = True, kv_cache: bool = False) -> GenerationCost:
    """Autoregressive generation through the pyramid. With a history KV cache, history tokens are computed once
    per frame and stage instead of once per Euler step."""
    per = stage_tokens(height, width, patch, stages)
    mult = 2 if cfg else 1
    evals = tokens = 0
    for f in range(frames):
        steps = steps_first if f == 0 else steps_later
        for k in range(stages):
            hist = sum(per[h] for h in history_stages(f, k, stages, temporal_pyramid))
            evals += mult * steps[k]
            tokens += mult * (steps[k] * per[k] + (hist if kv_cache else steps[k] * hist))
    return GenerationCost(evals, tokens)


def fullseq_generation_cost(height: int, width: int, patch: int, frames: int, steps: int,
                            cfg: bool = True) -> GenerationCost:
    mult = 2 if cfg else 1
    return GenerationCost(mult * steps, mult * steps * fullseq_training_tokens(height, width, patch, frames))


def transformer_forward_flops(tokens: float, depth: int, hidden: int, mlp_ratio: float = 4.0,
                              attn_tokens: float | None = None) -> float:
    """Analytic forward FLOPs of a (MM-)DiT on a sequence: per block 2*(4 + 2*mlp_ratio) d^2 per token for the
    projections and MLP, plus 4 n^2 d for QK^T and AV (multiply-adds count 2)."""
    n = tokens if attn_tokens is None else attn_tokens
    dense = 2.0 * (4.0 + 2.0 * mlp_ratio) * hidden * hidden * tokens
    attention = 4.0 * tokens * n * hidden
    return depth * (dense + attention)


def training_flops(tokens: float, depth: int, hidden: int, mlp_ratio: float = 4.0) -> float:
    """Forward + backward of one sample: 3x the forward FLOPs."""
    return 3.0 * transformer_forward_flops(tokens, depth, hidden, mlp_ratio)


def batch_training_flops(video_tokens: float, samples: int, text_tokens: int, model: ModelConfig) -> float:
    """Training FLOPs of one stage-homogeneous batch of `samples` samples holding `video_tokens` video tokens in
    all, each with `text_tokens` text tokens: `samples` times the FLOPs of its mean sequence (every sample of a
    batch has the same length, so this is exact)."""
    per_sample = (video_tokens + samples * text_tokens) / samples
    return training_flops(per_sample, model.depth, model.hidden_size, model.mlp_ratio) * samples


def draw_video_tokens(draw: tuple[int, int], frames: int, height: int, width: int, patch: int,
                      pyramid: PyramidConfig) -> int:
    """Video tokens of one training sample of a (pyramid stage, learnt frame) draw (train/sequences.py
    draw_stage_frame) on a height x width latent of `frames` frames: the learnt frame with its compressed history,
    or every frame at full resolution for the full sequence (one stage), which draws neither."""
    if pyramid.stages == 1:
        return fullseq_training_tokens(height, width, patch, frames)
    stage, frame = draw
    return pyramid_sample_tokens(height, width, patch, frame + 1, pyramid.stages, stage, pyramid.temporal_pyramid)


def sample_token_distribution(cfg: Config, stage: CurriculumStage) -> list[tuple[float, int]]:
    """(probability, video tokens) of the training samples of curriculum `stage` as the trainer draws them
    (train/sequences.py make_batch): pyramid stage k ~ pyramid.stage_weights and learnt latent frame
    j ~ U{0..T-1} with its compressed history (uncompressed without the temporal pyramid); the full-sequence
    baseline runs all T frames at full resolution."""
    p, m, v = cfg.pyramid, cfg.model, cfg.vae
    h, w = stage.height // v.spatial_compression, stage.width // v.spatial_compression
    T = latent_frames(stage.frames, v.temporal_compression)
    if p.stages == 1:
        return [(1.0, draw_video_tokens((0, 0), T, h, w, m.patch_size, p))]
    weights = p.stage_weights or [1.0] * p.stages
    return [(wk / sum(weights) / T, draw_video_tokens((k, j), T, h, w, m.patch_size, p))
            for k, wk in enumerate(weights) for j in range(T)]


def expected_sample_tokens(cfg: Config, stage: CurriculumStage) -> float:
    """Expected tokens (video + text) of one training sample of `stage` (see sample_token_distribution)."""
    return sum(pr * t for pr, t in sample_token_distribution(cfg, stage)) + cfg.text_encoder.max_tokens


def expected_sample_flops(cfg: Config, stage: CurriculumStage) -> float:
    """Expected training FLOPs (forward + backward, text tokens included) of one sample of `stage`, over
    sample_token_distribution. Attention is quadratic in the tokens, so this averages FLOPs, not tokens."""
    m = cfg.model
    return sum(pr * training_flops(t + cfg.text_encoder.max_tokens, m.depth, m.hidden_size, m.mlp_ratio)
               for pr, t in sample_token_distribution(cfg, stage))


# dense bf16 tensor-core peaks (FLOP/s) of the GPUs model FLOPs utilisation (MFU) is stated for, matched as
# substrings of torch.cuda.get_device_name in this order (A100 before A10); another GPU gets no MFU
PEAK_BF16_FLOPS: dict[str, float] = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
A100_BF16_PEAK = PEAK_BF16_FLOPS["A100"]  # the paper's GPU (Table 4): the GPU-hour audit's reference


def peak_bf16_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by its name (torch.cuda.get_device_name), None when not in PEAK_BF16_FLOPS."""
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


PAPER_CLAIM_PERCENT = 85.0  # docs/method.md §4: "training tokens reduced by more than 85% for a 10 s video"


@dataclass(frozen=True)
class TokenReport:
    profile: str
    seconds: float
    pixel_frames: int
    latent_frames: int
    latent_height: int
    latent_width: int
    tokens_per_frame: int
    stage_tokens: list[int]
    fullseq_tokens: int
    pyramid_tokens: float  # expected per training sample
    reduction_percent: float
    gen_fullseq_tokens: int
    gen_pyramid_tokens: int
    gen_pyramid_tokens_kv: int
    gen_fullseq_evals: int
    gen_pyramid_evals: int


def token_report(cfg: Config, seconds: float | None = None) -> TokenReport:
    """Token counts for a clip of `seconds` (default: the profile's clip length) at the profile's resolution."""
    fps, T = cfg.data.fps, cfg.vae.temporal_compression
    if seconds is None:
        frames = cfg.data.frames
    else:
        frames = int(round(seconds * fps)) + 1
        if (frames - 1) % T:
            raise ConfigError(f"--seconds {seconds} at data.fps={fps} gives {frames} frames, which is not 1 + k*{T} "
                              f"(vae.temporal_compression); choose seconds so that seconds*fps is a multiple of {T}")
    s, p, K = cfg.vae.spatial_compression, cfg.model.patch_size, cfg.pyramid.stages
    h, w = cfg.data.height // s, cfg.data.width // s
    n = latent_frames(frames, T)
    full = fullseq_training_tokens(h, w, p, n)
    pyr = expected_training_tokens(h, w, p, n, K, cfg.pyramid.stage_weights, cfg.pyramid.temporal_pyramid)
    first, later = cfg.pyramid.stage_steps(True), cfg.pyramid.stage_steps(False)
    g_pyr = pyramid_generation_cost(h, w, p, n, K, first, later, temporal_pyramid=cfg.pyramid.temporal_pyramid)
    g_kv = pyramid_generation_cost(h, w, p, n, K, first, later, temporal_pyramid=cfg.pyramid.temporal_pyramid,
                                        kv_cache=True)
    g_full = fullseq_generation_cost(h, w, p, n, sum(first))
    return TokenReport(
        profile=cfg.profile, seconds=(frames - 1) / fps, pixel_frames=frames, latent_frames=n, latent_height=h,
        latent_width=w, tokens_per_frame=tokens_per_frame(h, w, p), stage_tokens=stage_tokens(h, w, p, K),
        fullseq_tokens=full, pyramid_tokens=pyr, reduction_percent=100.0 * (1.0 - pyr / full),
        gen_fullseq_tokens=g_full.tokens, gen_pyramid_tokens=g_pyr.tokens, gen_pyramid_tokens_kv=g_kv.tokens,
        gen_fullseq_evals=g_full.evaluations, gen_pyramid_evals=g_pyr.evaluations,
    )
