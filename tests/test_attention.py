"""The two attention kernels (models/attention.py): FlexAttention's block mask follows the same rule as the dense
boolean mask, and the MM-DiT gives the same velocity under both (FlexAttention runs uncompiled on the CPU; on CUDA
the same mask_mod is compiled)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyramid_repro.models.attention import FlexMask, MaskSpec, attend, resolve_kernel

flex = pytest.importorskip("torch.nn.attention.flex_attention")
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

# frames of the video keys: two history frames of 4 and 2 tokens, a current frame of 8 tokens
FRAMES = torch.tensor([0] * 4 + [1] * 2 + [2] * 8)
TEXT = torch.tensor([[True] * 5, [True, True, False, False, False]])  # the second sample's text is padded

SPECS = {
    "causal": MaskSpec(FRAMES, TEXT, True, 5 + 14),
    "bidirectional": MaskSpec(FRAMES, TEXT, False, 5 + 14),
    "kv cache (queries: the current frame)": MaskSpec(FRAMES, TEXT, True, 8),
    "text sees frame 0 (the authors' model)": MaskSpec(FRAMES, TEXT, True, 5 + 14, True),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_flex_mask_mod_is_the_dense_mask(name):
    spec = SPECS[name]
    dense = spec.dense()
    grid = flex.create_mask(spec.mask_mod(), 2, 1, spec.n_queries, spec.n_keys, device="cpu")
    assert grid.shape == dense.shape == (2, 1, spec.n_queries, 19)
    assert torch.equal(grid, dense)
    # the rule, by hand, for the causal full pass: a current-frame token sees valid text and frames 0-2, a
    # frame-0 token not frame 1, text never sees video, padded text keys are hidden except from themselves
    if name == "causal":
        d = dense[1, 0]
        assert d[5 + 6, :2].all() and not d[5 + 6, 2:5].any() and d[5 + 6, 5:].all()
        assert d[5, 5:9].all() and not d[5, 9:].any()
        assert not d[0, 5:].any() and d[3, 3] and not d[3, 2]
    if name.startswith("text sees frame 0"):  # text reads the first frame's tokens and nothing later
        d = dense[0, 0]
        assert d[:5, 5:9].all() and not d[:5, 9:].any()


@pytest.mark.parametrize("name", list(SPECS))
def test_flex_attention_equals_dense_sdpa(name):
    spec = SPECS[name]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, spec.n_queries, 16, generator=g)
    k, v = torch.randn(2, 2, spec.n_keys, 16, generator=g), torch.randn(2, 2, spec.n_keys, 16, generator=g)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=spec.dense())
    # small blocks, so the sequence has full, partial and empty blocks
    out = attend(q, k, v, FlexMask(spec, spec.block_mask(block_size=4)))
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    if name == "causal":  # the block mask really skips blocks: later frames and padded text
        assert spec.block_mask(block_size=4).sparsity() > 0


def _dit(causal: bool):
    from pyramid_repro.models import PyramidDiT

    torch.manual_seed(0)
    m = PyramidDiT(in_channels=4, patch_size=1, hidden_size=32, depth=2, num_heads=2, text_dim=8, pooled_dim=8,
                   causal=causal)
    for p in m.parameters():  # adaLN-Zero's zero layers would hide differences: re-randomise everything
        torch.nn.init.normal_(p, std=0.1)
    return m.eval()


def _velocities(m, kernel: str, text_mask: torch.Tensor, cached: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    B = text_mask.shape[0]
    hist = [torch.randn(B, 4, 2, 3, generator=g), torch.randn(B, 4, 4, 6, generator=g)]
    cur, tok = torch.randn(B, 4, 1, 8, 12, generator=g), torch.randn(B, 3, 8, generator=g)
    pooled, t = torch.randn(B, 8, generator=g), torch.tensor([900.0, 30.0][:B])
    m.attention_kernel = kernel
    with torch.no_grad():
        if cached:
            ctx = m.encode_context(hist, tok, text_mask, pooled, (8, 12))
            return m(history=None, current=cur, timestep=t, tokens=None, text_mask=None, pooled=pooled,
                     full_size=(8, 12), context=ctx)
        return m(history=hist, current=cur, timestep=t, tokens=tok, text_mask=text_mask, pooled=pooled,
                 full_size=(8, 12))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("padded", [False, True], ids=["all text valid", "padded text"])
def test_dit_velocity_is_the_same_under_both_kernels(causal, padded):
    m = _dit(causal)
    text = torch.tensor([[True, True, not padded], [True, not padded, not padded]])
    ref = _velocities(m, "sdpa", text)
    torch.testing.assert_close(_velocities(m, "flex", text), ref, rtol=1e-5, atol=1e-5)
    if causal:  # the history KV cache path: the current frame's queries over cached text + history keys
        torch.testing.assert_close(_velocities(m, "flex", text, cached=True), ref, rtol=1e-5, atol=1e-5)


def test_kernel_choice():
    assert resolve_kernel("auto", "cpu") == "sdpa" and resolve_kernel("auto", "cuda") == "flex"
    assert resolve_kernel("flex", "cpu") == "flex" and resolve_kernel("sdpa", "cuda") == "sdpa"
    with pytest.raises(ValueError, match="expected one of auto, sdpa, flex"):
        resolve_kernel("xformers", "cpu")


def test_benchmark_attention_section_runs_on_the_cpu():
    """benchmarks/pyramid_vs_fullseq.py (d) on the CPU; on a GPU the same code times the paper-size layer."""
    import sys
    from pathlib import Path

    from pyramid_repro.config import load_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from pyramid_vs_fullseq import attention_kernels, attention_layout

    # the paper's 384p 5 s sequences: the full-sequence baseline's 16 x 960 video tokens + 128 text tokens, and
    # the pyramid's last frame at stage 3 after its compressed history
    frames, L = attention_layout(load_config("paper", None, "fullseq"), (384, 640, 121))
    assert (len(frames) + L, int(frames.max())) == (15488, 15)
    frames, L = attention_layout(load_config("paper", None, "pyramid"), (384, 640, 121))
    assert len(frames) + L < 15488 / 4 and int(frames.max()) == 15
    out = attention_kernels(load_config("tiny"), torch.device("cpu"), repeats=1)
    assert out["tokens"] == 168 and 0 < out["density"] < 1
    assert out["flex max abs diff"] < 1e-5 and out["sdpa, dense mask"] > 0


def test_a_failing_flex_kernel_falls_back_to_the_dense_mask_once(monkeypatch):
    from pyramid_repro.models import attention

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this head size")

    monkeypatch.setattr(attention, "flex_attention", broken)
    monkeypatch.setattr(attention, "_FLEX_FAILED", [])
    spec = SPECS["causal"]
    q = k = v = torch.randn(2, 2, spec.n_keys, 16)
    with pytest.warns(UserWarning, match="no kernel for this head size.*dense-mask attention"):
        out = attend(q, k, v, spec.build("flex"))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=spec.dense()))
    assert resolve_kernel("auto", "cuda") == "sdpa"  # auto stays on the dense mask for the rest of the process


def test_benchmark_paper_training_section_runs_on_the_cpu():
    """benchmarks/pyramid_vs_fullseq.py (e): on a GPU the paper's 2B model; here the same code on the tiny
    model, to catch its mistakes. The pyramid packs several short samples into the full sequence's budget."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from pyramid_vs_fullseq import device_peak, paper_training_section

    assert device_peak("NVIDIA H100 80GB HBM3") == 989e12 and device_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert device_peak("Tesla T4") is None
    results: dict = {}
    lines = paper_training_section(torch.device("cpu"), 2, 5 * 64 + 16, "cpu", profile="tiny", size=(32, 32, 17),
                                   results=results)
    assert set(results) == {"fullseq", "pyramid"} and results["pyramid"]["mfu"] is None  # what performance.json gets
    table = [row for row in lines if row.startswith(("| fullseq", "| pyramid"))]
    full, pyr = (float(row.split("|")[2]) for row in table)
    assert full == 1.0 and pyr > 1.0  # the full sequence fills the budget alone; pyramid samples share it
    assert "n/a (peak unknown)" in table[0] and any("wall / FLOP share" in row for row in lines)
