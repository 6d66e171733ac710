"""Captured Euler steps (generation/capture.py) without a GPU.

* `replay-emulation` follows the CUDA graph's buffer protocol on the CPU; captured generation must equal eager
  generation bit for bit (pyramid with and without the KV cache, guidance on and off, image-to-video, full
  sequence), with one capture per (frame, stage) and replays for the other Euler steps.
* Negative controls: deliberately broken steps (input not copied into the static buffer, static output returned
  without a copy, the capture's own output returned before any replay) fail the same checks.
* The `cuda-graph` backend's own code runs against a stand-in for torch.cuda whose graph records the ATen ops and
  replays them: same result, warm-up on the side stream before capture, one memory pool and stream for all
  captures of a video, autocast's cast cache off during capture.
* Graph safety on the `meta` device: the captured call (cached and uncached forward) creates no host tensor and
  reads no device value on the host; the check itself catches such code.
* `cuda-graph` on a CPU-only run is refused by the API and by `sample --capture`.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from pyramid_repro.config import ConfigError, load_config
from pyramid_repro.generation.capture import (
    CaptureSession,
    CudaGraphStep,
    EmulatedStep,
    GraphSafetyError,
    OpTape,
    check_capture,
    graph_safe,
)
from pyramid_repro.generation.generate import TextCondition, generate_latents
from pyramid_repro.models import build_dit
from pyramid_repro.models import positions as positions_module

META = torch.device("meta")
TEXT_DIM, POOLED_DIM = 8, 8


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's ops are far too small to share between threads (and the machine is shared): one thread
    keeps the module fast; eager and captured runs see the same setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(experiment: str = "pyramid", guidance: float = 2.0):
    sampler = {"steps_first_frame": [3, 2, 2], "steps_later_frames": [2, 3, 2], "guidance_first_frame": guidance,
               "guidance_video": guidance}
    return load_config("smoke", {"pyramid": {"sampler": sampler}}, experiment)


def _model(cfg, device: torch.device | str = "cpu"):
    torch.manual_seed(0)
    m = build_dit(cfg, TEXT_DIM, POOLED_DIM)
    for p in m.parameters():  # adaLN-Zero starts with a zero output: make the velocity non-trivial
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return m.eval().to(device)


def _text(B: int, device: torch.device | str = "cpu", seed: int = 1) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[True, True, False]] * B)  # one padded token: the mask matters
    return TextCondition(torch.randn(B, 3, TEXT_DIM, generator=g).to(device), mask.to(device),
                         torch.randn(B, POOLED_DIM, generator=g).to(device))


CASES = {  # name: (experiment, kv_cache, guidance, image-to-video)
    "pyramid-kv-cfg": ("pyramid", True, 2.0, False),
    "pyramid-cfg": ("pyramid", False, 2.0, False),
    "pyramid-kv-nocfg": ("pyramid", True, 1.0, False),
    "pyramid-nocfg": ("pyramid", False, 1.0, False),
    "pyramid-kv-i2v": ("pyramid", True, 2.0, True),
    "fullseq-cfg": ("fullseq", False, 2.0, False),
}
FRAMES = 3


def _generate(case: str, capture="none") -> torch.Tensor:
    experiment, kv, guidance, i2v = CASES[case]
    cfg = _cfg(experiment, guidance)
    first = torch.randn(2, cfg.vae.latent_channels, 8, 8, generator=torch.Generator().manual_seed(3)) if i2v else None
    return generate_latents(_model(cfg), cfg, _text(2), _text(1, seed=2), FRAMES, (8, 8),
                            torch.Generator().manual_seed(0), first_frame=first, kv_cache=kv, capture=capture)


def _expected_calls(case: str) -> tuple[int, int]:
    """(captures, replays) of one video: a capture per (frame, stage), a replay for every other Euler step."""
    experiment, _, _, i2v = CASES[case]
    cfg = _cfg(experiment)
    sched = [cfg.pyramid.stage_steps(True)] if experiment == "fullseq" else \
        [cfg.pyramid.stage_steps(f == 0) for f in range(FRAMES) if not (i2v and f == 0)]
    captures = sum(len(s) for s in sched)
    return captures, sum(sum(s) for s in sched) - captures


@pytest.fixture(scope="module")
def eager() -> dict[str, torch.Tensor]:
    return {case: _generate(case) for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_captured_generation_equals_eager(case, eager):
    session = CaptureSession("replay-emulation")
    out = _generate(case, session)
    assert torch.equal(out, eager[case]), f"max abs difference {(out - eager[case]).abs().max():.3e}"
    assert (session.captures, session.replays) == _expected_calls(case)


def test_captured_generation_equals_eager_for_the_official_model():
    """The authors' model plans its positions differently (a cropped table, resampled for history frames)."""
    from pyramid_repro.models import OfficialPyramidDiT

    cfg = _cfg()
    torch.manual_seed(0)
    m = OfficialPyramidDiT(in_channels=cfg.vae.latent_channels, patch_size=1, hidden_size=32, depth=2, num_heads=2,
                           text_dim=TEXT_DIM, pooled_dim=POOLED_DIM, pos_embed_max_size=16, pos_embed_base_size=8)
    for p in m.parameters():
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    runs = [generate_latents(m.eval(), cfg, _text(2), _text(1, seed=2), FRAMES, (8, 8),
                             torch.Generator().manual_seed(0), capture=capture)
            for capture in ("none", "replay-emulation")]
    assert torch.equal(*runs)


def test_capture_by_name_and_eager_default_agree(eager):
    torch.testing.assert_close(_generate("pyramid-kv-cfg", "replay-emulation"), eager["pyramid-kv-cfg"], rtol=0,
                               atol=0)


# -- negative controls: broken implementations of the buffer protocol ------------------------------------------------

class NoInputCopy(EmulatedStep):
    """Bug: the new step's input is not copied into the static buffer (the graph keeps reading the first one)."""

    def _load(self, inputs):
        pass


class NoOutputClone(EmulatedStep):
    """Bug: the static output itself is returned; the next replay overwrites what the caller still holds."""

    def _result(self):
        return self.static_out


class CaptureOutputFirst(EmulatedStep):
    """Bug: the first step returns the capture's output, which a CUDA graph has not computed yet."""

    def _record(self):
        super()._record()
        return self.static_out.clone()


def _session(step_cls) -> CaptureSession:
    session = CaptureSession("replay-emulation")
    session.steps = {"replay-emulation": step_cls}
    return session


def _held_outputs_match_eager(session: CaptureSession) -> bool:
    """Three calls of one captured function with the same shapes; every result is held until the end and compared
    with the function run eagerly on that call's inputs."""
    w = torch.randn(4, 4, generator=torch.Generator().manual_seed(5))

    def fn(x, t):
        return torch.tanh(x @ w) * t[:, None] + x

    step = session.wrap(fn)
    g = torch.Generator().manual_seed(6)
    calls = [(torch.randn(2, 4, generator=g), torch.rand(2, generator=g)) for _ in range(3)]
    held = [step(x, t) for x, t in calls]
    return all(torch.equal(h, fn(x, t)) for h, (x, t) in zip(held, calls))


def test_held_outputs_check_passes_for_the_emulation():
    assert _held_outputs_match_eager(CaptureSession("replay-emulation"))


def test_a_step_recaptures_when_shapes_change():
    session = CaptureSession("replay-emulation")
    step = session.wrap(lambda x, t: x * t[:, None])
    g = torch.Generator().manual_seed(7)
    for n in (2, 2, 3, 3, 2):
        x, t = torch.randn(n, 4, generator=g), torch.rand(n, generator=g)
        assert torch.equal(step(x, t), x * t[:, None])
    assert (session.captures, session.replays) == (3, 2)


@pytest.mark.parametrize("kv_cache", [True, False])
def test_stage_constants_are_built_before_the_captured_call(kv_cache, monkeypatch):
    """The plan (positions, mask, RoPE) and the KV cache are made once per (frame, stage), outside the recorded
    call: inside it they would be rebuilt at every replay (and the mask kernel captured with them)."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    cfg = _cfg()
    m = _model(cfg)
    calls = {"plan": [], "encode_context": []}
    for name in calls:
        real = getattr(m, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name].append(_get_current_dispatch_mode() is None)
            return _real(*args, **kwargs)

        monkeypatch.setattr(m, name, spy)
    session = CaptureSession("replay-emulation")
    generate_latents(m, cfg, _text(2), _text(1, seed=2), FRAMES, (8, 8), torch.Generator().manual_seed(0),
                     kv_cache=kv_cache, capture=session)
    assert calls["plan"] == [True] * session.captures
    assert calls["encode_context"] == [True] * (session.captures if kv_cache else 0)


def test_emulation_refuses_flex_attention():
    cfg = _cfg()
    m = _model(cfg)
    m.attention_kernel = "flex"
    with pytest.raises(ValueError, match="set model.attention_kernel = 'sdpa'"):
        generate_latents(m, cfg, _text(1), _text(1), 1, (8, 8), capture="replay-emulation")


@pytest.mark.parametrize("broken", [NoInputCopy, NoOutputClone, CaptureOutputFirst])
def test_broken_protocol_fails_the_checks(broken, eager):
    """The equality checks above can fail: each broken step is caught by the held-outputs check or by generation
    equality."""
    held_ok = _held_outputs_match_eager(_session(broken))
    out = _generate("pyramid-kv-cfg", _session(broken))
    generation_ok = torch.equal(out, eager["pyramid-kv-cfg"])
    assert not (held_ok and generation_ok)
    if broken is not NoOutputClone:  # the sampler consumes each velocity at once, so only the held check sees it
        assert not generation_ok


# -- the cuda-graph backend's code against a stand-in for torch.cuda -------------------------------------------------

class FakeStream:
    def __init__(self, fake: "FakeCuda", name: str):
        self.fake, self.name = fake, name

    def wait_stream(self, other: "FakeStream") -> None:
        self.fake.log.append(("wait", self.name, other.name))


class FakeGraph:
    tape: OpTape | None = None
    replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.tape.replay()


class SpyTape(OpTape):
    """Records the autocast state the captured ops run under."""

    def __init__(self, fake: "FakeCuda"):
        super().__init__("cpu")
        self.fake = fake

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.fake.capture_states.add((torch.is_autocast_enabled("cpu"), torch.is_autocast_cache_enabled()))
        return super().__torch_dispatch__(func, types, args, kwargs)


class FakeCuda:
    """The torch.cuda calls CudaGraphStep makes, on the CPU: streams only log, and a graph records the ATen ops run
    inside its capture (then poisons their outputs: nothing is computed at capture) and replays them."""

    def __init__(self):
        self.log: list[tuple] = []
        self.main = FakeStream(self, "main")
        self.current = self.main
        self.pools: list[object] = []
        self.captures: list[tuple] = []  # (pool, stream name) of each capture
        self.capture_states: set[tuple[bool, bool]] = set()
        self.graphs: list[FakeGraph] = []

    def Stream(self, device=None) -> FakeStream:  # noqa: N802 - torch.cuda's name
        return FakeStream(self, "side")

    def current_stream(self, device=None) -> FakeStream:
        return self.current

    @contextlib.contextmanager
    def stream(self, s: FakeStream):
        prev, self.current = self.current, s
        self.log.append(("run on", s.name))
        try:
            yield
        finally:
            self.current = prev
            self.log.append(("back to", prev.name))

    def graph_pool_handle(self) -> object:
        self.pools.append(object())
        return self.pools[-1]

    def CUDAGraph(self) -> FakeGraph:  # noqa: N802 - torch.cuda's name
        self.graphs.append(FakeGraph())
        return self.graphs[-1]

    @contextlib.contextmanager
    def graph(self, g: FakeGraph, pool=None, stream: FakeStream | None = None):
        self.captures.append((pool, stream.name if stream else None))
        self.log.append(("capture", stream.name if stream else None))
        tape = SpyTape(self)
        with graph_safe("cpu"), tape:
            yield
        tape.poison()
        g.tape = tape


def _protocol_problems(fake: FakeCuda, n_captures: int) -> list[str]:
    """What a CUDA graph needs from CudaGraphStep, read off the stand-in's log."""
    problems = []
    if len(fake.pools) != 1 or any(pool is not fake.pools[0] for pool, _ in fake.captures):
        problems.append("captures do not share the session's one memory pool")
    if any(name != "side" for _, name in fake.captures):
        problems.append("a capture not on the session's side stream")
    warmup = [("wait", "side", "main"), ("run on", "side"), ("back to", "main"), ("wait", "main", "side"),
              ("capture", "side")]
    if fake.log != warmup * n_captures:
        problems.append(f"not 'warm up on the side stream, then capture' at every capture: {fake.log[:6]}")
    if len(fake.graphs) != n_captures:
        problems.append(f"{len(fake.graphs)} graphs for {n_captures} captures")
    return problems


def test_cuda_graph_step_on_a_stand_in_equals_eager(eager):
    fake = FakeCuda()
    session = CaptureSession("cuda-graph", "cpu", cuda=fake)
    out = _generate("pyramid-kv-cfg", session)
    assert torch.equal(out, eager["pyramid-kv-cfg"])
    captures, replays = _expected_calls("pyramid-kv-cfg")
    assert (session.captures, session.replays) == (captures, replays)
    assert sum(g.replays for g in fake.graphs) == replays
    assert _protocol_problems(fake, captures) == []
    assert fake.capture_states == {(False, True)}  # no autocast here: nothing changed


class WarmupOnMainStream(CudaGraphStep):
    """Bug: no side-stream warm-up, and a capture outside the shared pool."""

    def _record(self):
        out = self.fn(*self.static_inputs).clone()
        self.graph = self.session.cuda.CUDAGraph()
        with self.session.cuda.graph(self.graph, stream=self.session.stream):
            self.static_out = self.fn(*self.static_inputs)
        return out


def test_cuda_protocol_check_catches_a_broken_step():
    fake = FakeCuda()
    session = CaptureSession("cuda-graph", "cpu", cuda=fake)
    session.steps = {"cuda-graph": WarmupOnMainStream}
    assert _held_outputs_match_eager(session)  # right values on the CPU, and still wrong for a GPU:
    assert len(_protocol_problems(fake, 1)) == 2


def test_cuda_graph_capture_turns_the_autocast_cache_off():
    """Under autocast (bf16 on the CPU here, on CUDA in `sample`) the capture runs with cache_enabled=False, and
    the replayed result equals eager autocast generation."""
    cfg = _cfg()
    fake = FakeCuda()
    runs = {}
    for name, capture in (("eager", "none"), ("graph", CaptureSession("cuda-graph", "cpu", cuda=fake))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            runs[name] = generate_latents(_model(cfg), cfg, _text(2), _text(1, seed=2), 2, (8, 8),
                                          torch.Generator().manual_seed(0), kv_cache=True, capture=capture)
    # (inside autocast's own kernels the TLS reads "disabled": only the cache flag is the same for every op)
    assert {cache for _, cache in fake.capture_states} == {False} and (True, False) in fake.capture_states
    assert torch.equal(runs["graph"], runs["eager"])


# -- graph safety on the meta device ---------------------------------------------------------------------------------

def _meta_inputs(cfg, n_hist: int = 2, B: int = 2):
    C = cfg.vae.latent_channels
    hist = [torch.randn(B, C, 2 * 2 ** i, 2 * 2 ** i, device=META) for i in range(n_hist)]
    return hist, torch.randn(B, C, 1, 8, 8, device=META), torch.rand(B, device=META) * 1000, _text(B, META)


@pytest.mark.parametrize("cached", [True, False])
def test_planned_forward_is_graph_safe_on_meta(cached):
    """The velocity call with its plan (and KV cache) made beforehand: no host tensor, no host read."""
    cfg = _cfg()
    m = _model(cfg, META)
    hist, cur, ts, text = _meta_inputs(cfg)
    with torch.no_grad():
        ctx = m.encode_context(hist, text.tokens, text.mask, text.pooled, (8, 8)) if cached else None
        plan = m.plan([] if cached else hist, tuple(cur.shape), text.mask, (8, 8), ctx, META, cur.dtype)
        positions_module._spatial_embedding.cache_clear()  # nothing may come from a warm host-side cache
        with graph_safe(META):
            v = m(history=[] if cached else hist, current=cur, timestep=ts, tokens=None if cached else text.tokens,
                  text_mask=None if cached else text.mask, pooled=text.pooled, full_size=(8, 8), context=ctx,
                  plan=plan)
    assert v.device == META and v.shape == cur.shape


@pytest.mark.parametrize("cached", [True, False])
def test_graph_safety_catches_the_forward_building_its_own_tables(cached):
    """Negative control with the real forward: without a plan it builds its position tables on the host (a host
    tensor copied to the device: illegal during capture) and the check says so."""
    cfg = _cfg()
    m = _model(cfg, META)
    hist, cur, ts, text = _meta_inputs(cfg)
    with torch.no_grad():
        ctx = m.encode_context(hist, text.tokens, text.mask, text.pooled, (8, 8)) if cached else None
        positions_module._spatial_embedding.cache_clear()
        with pytest.raises(GraphSafetyError, match="on cpu inside a region captured on meta"), graph_safe(META):
            m(history=[] if cached else hist, current=cur, timestep=ts, tokens=None if cached else text.tokens,
              text_mask=None if cached else text.mask, pooled=text.pooled, full_size=(8, 8), context=ctx)


@pytest.mark.parametrize("bad", ["item", "bool", "host tensor to device", "host scalar tensor", "to host", "nonzero"])
def test_graph_safety_catches_host_work(bad):
    x = torch.randn(3, device=META)
    calls = {
        "item": lambda: x.sum().item(),
        "bool": lambda: bool((x > 0).any()),
        "host tensor to device": lambda: x + torch.arange(3).to(META),
        "host scalar tensor": lambda: x * torch.tensor(2.0),
        "to host": lambda: x.cpu(),
        "nonzero": lambda: x.nonzero(),
    }
    with pytest.raises(GraphSafetyError), graph_safe(META):
        calls[bad]()


@pytest.mark.parametrize("experiment,kv_cache", [("pyramid", True), ("pyramid", False), ("fullseq", False)])
def test_captured_generation_runs_graph_safe_on_meta(experiment, kv_cache, monkeypatch):
    """Whole generation on meta with the emulation, whose recorded call runs under graph_safe(meta). Position tables
    are built afresh at every request, so nothing is safe only because a warm-up filled a host-side cache."""
    from pyramid_repro.device import generator
    from pyramid_repro.models import dit

    def uncached(h, w, full_h, full_w, dim, interpolate, device="cpu", dtype=torch.float32):
        return positions_module._spatial_embedding.__wrapped__(h, w, full_h, full_w, dim, interpolate,
                                                               torch.device(device), dtype)

    monkeypatch.setattr(dit, "spatial_embedding", uncached)
    cfg = _cfg(experiment)
    session = CaptureSession("replay-emulation", META)
    lat = generate_latents(_model(cfg, META), cfg, _text(2, META), _text(1, META), 2, (8, 8), generator(0, META),
                           kv_cache=kv_cache, capture=session)
    assert lat.device == META and session.captures > 0 and session.replays > 0


# -- the plan ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cached", [True, False])
def test_forward_with_a_plan_equals_forward_without(cached):
    cfg = _cfg()
    m = _model(cfg)
    g = torch.Generator().manual_seed(4)
    C = cfg.vae.latent_channels
    hist = [torch.randn(2, C, 2, 2, generator=g), torch.randn(2, C, 4, 4, generator=g)]
    cur, text = torch.randn(2, C, 1, 8, 8, generator=g), _text(2)
    with torch.no_grad():
        ctx = m.encode_context(hist, text.tokens, text.mask, text.pooled, (8, 8)) if cached else None
        plan = m.plan(hist, tuple(cur.shape), text.mask, (8, 8), ctx, "cpu", cur.dtype)
        for t in (900.0, 20.0):
            kw = dict(history=hist, current=cur, timestep=torch.full((2,), t), tokens=text.tokens,
                      text_mask=text.mask, pooled=text.pooled, full_size=(8, 8), context=ctx)
            assert torch.equal(m(**kw, plan=plan), m(**kw))
        with pytest.raises(ValueError, match="ForwardPlan made for current"):
            m(**{**kw, "current": cur[:1]}, plan=plan)


# -- refusing cuda-graph without CUDA --------------------------------------------------------------------------------

def test_api_refuses_cuda_graph_on_the_cpu():
    cfg = _cfg()
    with pytest.raises(ValueError, match=r"capture='cuda-graph' needs a CUDA device .* runs on cpu"):
        generate_latents(_model(cfg), cfg, _text(1), _text(1), 1, (8, 8), capture="cuda-graph")
    with pytest.raises(ConfigError, match="capture='graphs': expected one of none, cuda-graph"):
        check_capture("graphs", "cpu")
    check_capture("cuda-graph", "cuda")  # the device is what matters, not whether this machine has one


def test_sample_cli_refuses_cuda_graph_on_the_cpu(capsys):
    from pyramid_repro.cli import main

    rc = main(["sample", "--profile", "smoke", "--experiment", "pyramid", "--set", "compute.device=cpu",
               "--capture", "cuda-graph"])
    err = capsys.readouterr().err
    assert rc == 2 and "--capture cuda-graph needs a CUDA device" in err and "--capture none" in err
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--capture {none,cuda-graph}" in help_text and "needs a CUDA device" in help_text
