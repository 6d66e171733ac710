"""Training-sequence assembly and autoregressive generation, with a recording stand-in model."""

import torch

from pyramid_repro.config import load_config
from pyramid_repro.generation.generate import TextCondition, generate_latents
from pyramid_repro.flow import PyramidSchedule, pyramid_latents
from pyramid_repro.train.sequences import make_batch


def _cfg(experiment="pyramid", **sampler):
    over = {"vae": {"latent_channels": 4}}
    if sampler:
        over["pyramid"] = {"sampler": sampler}
    cfg = load_config("tiny", over, experiment)
    return cfg


def test_pyramid_batch_history_follows_temporal_pyramid():
    cfg = _cfg()
    cfg.pyramid.history_corruption = [0.0, 0.0]
    sched = PyramidSchedule.from_config(cfg.pyramid)
    x = torch.randn(3, 4, 5, 8, 8)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        b = make_batch(x, sched, cfg.pyramid, g)
        seen.add((b.stage, b.frame))
        side = 8 >> (2 - b.stage)
        assert b.current.shape == (3, 4, 1, side, side) == b.target.shape
        assert len(b.history) == b.frame
        # newest history at the current stage, the one before one coarser, older at the coarsest
        want = ([0] * max(0, b.frame - 2) + ([max(b.stage - 1, 0)] if b.frame >= 2 else [])
                + ([b.stage] if b.frame else []))
        assert b.history_stages == want
        for i, (h, s) in enumerate(zip(b.history, b.history_stages)):  # uncorrupted = the clean downsampled frame
            torch.testing.assert_close(h, pyramid_latents(x[:, :, i], 3)[s])
        lo, hi = sched.timestep_windows[b.stage][1], sched.timestep_windows[b.stage][0]
        assert ((b.timestep >= lo - 1e-4) & (b.timestep <= hi + 1e-4)).all()
    assert len({s for s, _ in seen}) == 3 and len({f for _, f in seen}) == 5


def test_history_corruption_changes_history_and_fullseq_has_none():
    cfg = _cfg()
    sched = PyramidSchedule.from_config(cfg.pyramid)
    x = torch.randn(2, 4, 5, 8, 8)
    g = torch.Generator().manual_seed(1)
    b = next(b for b in (make_batch(x, sched, cfg.pyramid, g) for _ in range(50)) if b.frame >= 1)
    clean = pyramid_latents(x[:, :, 0], 3)[b.history_stages[0]]
    assert not torch.allclose(b.history[0], clean)
    full = _cfg("fullseq")
    fs = PyramidSchedule.from_config(full.pyramid)
    fb = make_batch(x, fs, full.pyramid, g)
    assert fb.history == [] and fb.current.shape == x.shape and fb.video_tokens(1) == 2 * 5 * 64
    assert fb.video_tokens(2) == 2 * 5 * 16  # tokens after 2x2 patching, as the transformer sees them


def test_batch_tokens_match_the_cost_accounting_with_patches():
    """The ledger counts transformer tokens (after patching), the same as flow/cost.py's arithmetic."""
    from pyramid_repro.flow import cost

    cfg = _cfg()
    sched = PyramidSchedule.from_config(cfg.pyramid)
    x = torch.randn(2, 4, 5, 16, 16)
    g = torch.Generator().manual_seed(2)
    for _ in range(30):
        b = make_batch(x, sched, cfg.pyramid, g)
        want = cost.pyramid_sample_tokens(16, 16, 2, b.frame + 1, 3, b.stage, cfg.pyramid.temporal_pyramid)
        assert b.video_tokens(2) == 2 * want, (b.stage, b.frame)


class Recorder(torch.nn.Module):
    """Stand-in DiT: velocity = current - mean of text pooled; records the shapes it was called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, history, current, timestep, tokens, text_mask, pooled, full_size, context=None):
        self.calls.append(([tuple(h.shape[-2:]) for h in history], tuple(current.shape), current.shape[0]))
        return current - pooled.mean(1).view(-1, 1, 1, 1, 1)


def _text(B, v=1.0):
    return TextCondition(torch.full((B, 3, 2), v), torch.ones(B, 3, dtype=torch.bool), torch.full((B, 2), v))


def test_generation_calls_model_per_frame_and_stage_with_compressed_history():
    cfg = _cfg(steps_first_frame=[2, 2, 2], steps_later_frames=[1, 1, 1], guidance_first_frame=3.0,
               guidance_video=2.0)
    m = Recorder()
    out = generate_latents(m, cfg, _text(2), _text(1, 0.0), 4, (8, 8), torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 4, 8, 8) and torch.isfinite(out).all()
    assert len(m.calls) == 6 + 3 * 3  # first frame 2+2+2 steps, later frames 1+1+1
    assert all(c[2] == 4 for c in m.calls)  # cond + uncond batched
    # the last frame at full resolution sees history at 1/4, 1/2, full (oldest first)
    assert m.calls[-1][0] == [(2, 2), (4, 4), (8, 8)] and m.calls[-1][1] == (4, 4, 1, 8, 8)


def test_image_to_video_keeps_first_frame_and_fullseq_samples_all_frames_at_once():
    cfg = _cfg(steps_first_frame=[1, 1, 1], steps_later_frames=[1, 1, 1])
    first = torch.randn(2, 4, 8, 8)
    out = generate_latents(Recorder(), cfg, _text(2), _text(1, 0.0), 3, (8, 8), first_frame=first)
    torch.testing.assert_close(out[:, :, 0], first)
    full = _cfg("fullseq", steps_first_frame=[1, 1, 1], steps_later_frames=[1, 1, 1])
    m = Recorder()
    out = generate_latents(m, full, _text(2), _text(1, 0.0), 3, (8, 8))
    assert out.shape == (2, 4, 3, 8, 8) and len(m.calls) == 3 and m.calls[0][1] == (4, 4, 3, 8, 8)
