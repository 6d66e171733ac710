"""Device guards: every job must run with its models and tensors on a GPU, but CI has none. PyTorch's `meta` device
stands in: a meta tensor meeting a tensor the code made on the default (CPU) device raises "Tensor on device cpu
is not on the expected device meta", the same mistake that fails on CUDA. `DrawGuard` adds what meta alone does not
see: a random draw whose generator is not on the device the draw lands on (a CPU torch.Generator passed to a CUDA
randn fails on a GPU; on meta it would pass silently).

Covered on meta: the MM-DiT forward/backward (pyramid history, bidirectional, several current frames), the history
KV cache, a DiT training step from batch assembly to optimizer and EMA update, the sampler (pyramid with and
without the KV cache, full sequence), the VAE forward/backward and chunked encode/decode.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from pyramid_repro.config import ConfigError, load_config

META = torch.device("meta")


class DrawGuard(TorchFunctionMode):
    """Fails a random draw whose generator belongs to another device than the tensor it fills. A generator made
    by pyramid_repro.device.generator for `meta` (a MetaGenerator) stands for the job's device generator: its
    draws must land on meta, or on the host when the code names the generator's device (`device=g.device`, control
    draws read back with .item()/.tolist()) or samples from a tensor it moved there (multinomial)."""

    def __init__(self):
        super().__init__()
        self.draws = 0

    @staticmethod
    def _target(args, kwargs) -> torch.device:
        if kwargs.get("device") is not None:
            return torch.device(kwargs["device"])
        for a in args:
            if isinstance(a, torch.Tensor):
                return a.device
        return torch.device("cpu")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        from pyramid_repro.device import MetaGenerator

        kwargs = kwargs or {}
        g = kwargs.get("generator")
        if g is not None:
            self.draws += 1
            target = self._target(args, kwargs)
            name = getattr(func, "__name__", str(func))
            if isinstance(g, MetaGenerator):
                ok = target.type == "meta" or (target.type == "cpu" and ("device" in kwargs or name == "multinomial"))
            else:
                ok = target.type == g.device.type
            if not ok:
                owner = "meta" if isinstance(g, MetaGenerator) else g.device
                raise AssertionError(f"{name}: a generator of device '{owner}' "
                                     f"draws a tensor on '{target}' (on a GPU: a CPU generator in a CUDA draw, or a "
                                     "CUDA generator in a CPU draw)")
        return func(*args, **kwargs)


def _cfg(experiment: str = "pyramid", **over):
    return load_config("smoke", over or None, experiment)


def _meta_dit(cfg, text_dim: int = 24, pooled_dim: int = 12):
    from pyramid_repro.models import build_dit

    torch.manual_seed(0)
    return build_dit(cfg, text_dim, pooled_dim).to(META)


def _text(B: int, L: int = 5, D: int = 24, P: int = 12):
    from pyramid_repro.generation.generate import TextCondition

    return TextCondition(torch.randn(B, L, D, device=META), torch.ones(B, L, dtype=torch.bool, device=META),
                         torch.randn(B, P, device=META))


@pytest.mark.parametrize("attention,n_hist,T", [("causal", 2, 1), ("causal", 0, 1), ("bidirectional", 2, 1),
                                                 ("bidirectional", 0, 3)])
def test_dit_forward_backward_on_meta(attention, n_hist, T):
    cfg = _cfg(model={"attention": attention})
    model = _meta_dit(cfg).train()
    B, C = 2, cfg.vae.latent_channels
    hist = [torch.randn(B, C, 2 * 2 ** i, 2 * 2 ** i, device=META) for i in range(n_hist)]
    text = _text(B)
    v = model(history=hist, current=torch.randn(B, C, T, 4, 4, device=META),
              timestep=torch.rand(B, device=META) * 1000, tokens=text.tokens, text_mask=text.mask,
              pooled=text.pooled, full_size=(4, 4))
    assert v.device == META and v.shape == (B, C, T, 4, 4)
    v.float().pow(2).mean().backward()
    assert all(p.grad is None or p.grad.device == META for p in model.parameters())


def test_history_kv_cache_on_meta():
    cfg = _cfg()
    model = _meta_dit(cfg).eval()
    B, C = 2, cfg.vae.latent_channels
    hist = [torch.randn(B, C, 2, 2, device=META), torch.randn(B, C, 4, 4, device=META)]
    text = _text(B)
    ctx = model.encode_context(hist, text.tokens, text.mask, text.pooled, (4, 4))
    v = model(history=[], current=torch.randn(B, C, 1, 4, 4, device=META), timestep=torch.rand(B, device=META),
              tokens=None, text_mask=None, pooled=text.pooled, full_size=(4, 4), context=ctx)
    assert v.device == META


@pytest.mark.parametrize("experiment", ["pyramid", "fullseq", "no_temporal_pyramid"])
def test_dit_training_step_on_meta(experiment):
    """Batch assembly (rows, stage and frame draws, history, noise, caption dropout) through the optimizer step and
    the EMA update, with the latents, caption bank, model and generator on the device."""
    from pyramid_repro.device import generator
    from pyramid_repro.generation.generate import TextCondition
    from pyramid_repro.flow import PyramidSchedule
    from pyramid_repro.train.dit import CaptionBank, StageData, step_key
    from pyramid_repro.train.loop import EMA, micro_batch_generator

    cfg = _cfg(experiment)
    model = _meta_dit(cfg).train()
    captions = ["a red square", "a blue circle", "a green cross"]
    bank = CaptionBank(captions, TextCondition(*_text(len(captions) + 1).__dict__.values()))
    data = StageData(torch.randn(6, cfg.vae.latent_channels, 3, 4, 4, device=META), [captions[i % 3] for i in range(6)],
                     captions, bank)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ema = EMA(model, 0.9)
    sched = PyramidSchedule.from_config(cfg.pyramid)
    with DrawGuard() as guard:
        for step in range(4):  # several steps: the stage and frame draws differ
            g = micro_batch_generator(step_key(cfg.seed, 2, step), 0, META)
            b, text = data.micro_batch(2, sched, cfg, g)
            v = model(history=b.history, current=b.current, timestep=b.timestep, tokens=text.tokens,
                      text_mask=text.mask, pooled=text.pooled, full_size=(4, 4))
            torch.nn.functional.mse_loss(v.float(), b.target.float()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(model)
    assert guard.draws > 0
    assert all(t.device == META for t in ema.state_dict().values())
    assert isinstance(generator(0, META), torch.Generator)


@pytest.mark.parametrize("experiment,kv_cache", [("pyramid", False), ("pyramid", True), ("fullseq", False)])
def test_sampler_on_meta(experiment, kv_cache):
    from pyramid_repro.device import generator
    from pyramid_repro.generation.generate import generate_latents

    cfg = _cfg(experiment)
    model = _meta_dit(cfg).eval()
    with DrawGuard() as guard:
        lat = generate_latents(model, cfg, _text(2), _text(1), 3, (4, 4), generator(0, META), kv_cache=kv_cache)
    assert lat.device == META and lat.shape == (2, cfg.vae.latent_channels, 3, 4, 4)
    assert guard.draws > 0


def test_vae_forward_backward_and_chunked_coding_on_meta():
    from pyramid_repro.device import generator
    from pyramid_repro.vae.model import build_vae

    cfg = _cfg()
    vae = build_vae(cfg).to(META)
    x = torch.rand(2, 3, 9, 16, 16, device=META) * 2 - 1
    with DrawGuard():
        recon, mean, logvar = vae(x, generator=generator(0, META))
    loss = torch.nn.functional.mse_loss(recon, x) + 1e-6 * mean.pow(2).mean() + 1e-6 * logvar.mean()
    loss.backward()
    assert recon.device == META and all(p.grad.device == META for p in vae.parameters() if p.grad is not None)
    z = vae.encode(x, chunk_frames=1)
    assert z.device == META and vae.decode(z, chunk_frames=1).shape == x.shape


def test_draw_guard_catches_a_cpu_generator_in_a_device_draw():
    """The guard must be able to fail: the mistake it exists for."""
    x = torch.zeros(2, 3, device=META)
    with pytest.raises(AssertionError, match="draws a tensor on 'meta'"), DrawGuard():
        torch.randn(x.shape, generator=torch.Generator().manual_seed(0), device=x.device)
    with pytest.raises(AssertionError, match="draws a tensor on 'cpu'"), DrawGuard():
        from pyramid_repro.device import generator

        torch.randint(0, 5, (1,), generator=generator(0, META))  # a control draw that forgot device=g.device


def test_resolve_device():
    from pyramid_repro.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="compute.device=cuda but PyTorch sees no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="compute.device='tpu'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="compute.device"):
        load_config("smoke", {"compute": {"device": "gpu"}})
