"""Causal 3D VAE (docs/method.md §4): causality, compression shapes, chunked == whole, save/load, resume."""

import json
import os
import subprocess
import sys

import pytest
from conftest import kill_after_first_checkpoint
import torch

from pyramid_repro.config import load_config
from pyramid_repro.vae.handle import Normalization
from pyramid_repro.vae.evaluate import psnr, ssim
from pyramid_repro.vae.model import CausalVideoVAE, build_vae


@pytest.fixture(scope="module", params=[{}, {"patch_size": 2, "norm_eps": 1.0}], ids=["plain", "patch2"])
def small_vae(request):
    """The paper's design at toy size, and the tiny profile's variant (2x2 pixels folded into channels)."""
    torch.manual_seed(0)
    return CausalVideoVAE(channels=(8, 16, 16), layers_per_block=1, latent_channels=4, spatial_compression=4,
                          temporal_compression=4, **request.param).eval()


def test_patch_folding_is_exactly_invertible_and_checked():
    vae = CausalVideoVAE(channels=(8, 8), layers_per_block=1, latent_channels=4, spatial_compression=4,
                         temporal_compression=2, patch_size=4)
    x = torch.randn(2, 3, 5, 8, 12)
    folded = vae._fold(x)
    assert folded.shape == (2, 48, 5, 2, 3)
    torch.testing.assert_close(vae._unfold(folded), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="patch_size=3 must be >= 1 and divide vae.spatial_compression=4"):
        CausalVideoVAE(channels=(8, 8), spatial_compression=4, temporal_compression=2, patch_size=3)


def test_causal_encoder_and_decoder(small_vae):
    x = torch.randn(2, 3, 17, 16, 16)
    x2 = x.clone()
    x2[:, :, 9:] += 1.0  # frames 9.. belong to latent frames 3 and 4
    with torch.no_grad():
        z, z2 = small_vae.encode(x), small_vae.encode(x2)
        assert z.shape == (2, 4, 5, 4, 4)
        torch.testing.assert_close(z[:, :, :3], z2[:, :, :3], rtol=0, atol=0)
        assert (z[:, :, 3:] - z2[:, :, 3:]).abs().max() > 1e-3
        d, d2 = small_vae.decode(z), small_vae.decode(z2)
        torch.testing.assert_close(d[:, :, :9], d2[:, :, :9], rtol=0, atol=0)


def test_chunked_equals_whole_clip(small_vae):
    x = torch.randn(1, 3, 25, 16, 16)
    with torch.no_grad():
        z = small_vae.encode(x)
        for chunk in (1, 2, 3):
            torch.testing.assert_close(small_vae.encode(x, chunk_frames=chunk), z, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(small_vae.decode(z, chunk_frames=chunk), small_vae.decode(z),
                                       rtol=1e-5, atol=1e-5)


def test_bad_frame_count_is_a_clear_error(small_vae):
    with pytest.raises(ValueError, match="1 \\+ k\\*4"):
        small_vae.encode(torch.randn(1, 3, 8, 16, 16))


def test_paper_config_compresses_8x8x8_on_meta_device():
    cfg = load_config("paper")
    with torch.device("meta"):
        vae = build_vae(cfg)
        z = vae.encode(torch.empty(1, 3, 1 + 8 * 3, 64, 64))
    n = sum(p.numel() for p in vae.parameters())
    print(f"paper VAE parameters: {n / 1e6:.1f}M")
    assert z.shape == (1, 16, 4, 8, 8)
    assert 50e6 < n < 500e6


def test_save_load_round_trip(tmp_path, small_vae):
    small_vae.save_pretrained(tmp_path / "vae")
    again = CausalVideoVAE.from_pretrained(tmp_path / "vae").eval()
    x = torch.randn(1, 3, 9, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.encode(x), small_vae.encode(x))


def test_normalization_round_trip_and_metrics():
    n = Normalization(0.149, 1 / 1.8415, -0.2343, 1 / 3.0986)
    z = torch.randn(2, 4, 3, 4, 4)
    torch.testing.assert_close(n.denormalize(n.normalize(z)), z)
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    assert torch.isinf(psnr(x, x)).logical_not().all() and (psnr(x, x) > 100).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(2), rtol=0, atol=1e-5)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    assert (ssim(x, noisy) < 0.95).all() and (psnr(x, noisy) < 25).all()


def _train(results, *extra, check=True):
    cmd = [sys.executable, "-m", "pyramid_repro.cli", "train-vae", "--profile", "smoke", "--set",
           f"results={results}", "--set", "vae.train.steps=12", "--set", "vae.train.ckpt_every=4", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=check)


def _trace(folder):
    import csv

    return [float(r["loss"]) for r in csv.DictReader(open(folder / "train_log.csv"))]


@pytest.mark.timeout(600)
def test_resume_after_kill_equals_uninterrupted(tmp_path):
    base = tmp_path / "r"
    subprocess.run([sys.executable, "-m", "pyramid_repro.cli", "make-dataset", "--profile", "smoke", "--set",
                    f"results={base}", "--out", str(base / "smoke" / "data")], check=True, capture_output=True)
    _train(base)
    full = _trace(base / "smoke" / "vae")
    # second run into a fresh vae folder: kill it after its first checkpoint, then resume
    vae = base / "smoke" / "vae"
    os.rename(vae, base / "full_vae")
    cmd = [sys.executable, "-m", "pyramid_repro.cli", "train-vae", "--profile", "smoke", "--set", f"results={base}",
           "--set", "vae.train.steps=12", "--set", "vae.train.ckpt_every=4"]
    kill_after_first_checkpoint(cmd, vae / "checkpoints")
    assert not (vae / "final" / "normalization.json").exists(), "killed too late"
    _train(base)
    resumed = _trace(vae)
    assert len(resumed) == len(full) == 12
    assert resumed == pytest.approx(full, rel=1e-5, abs=1e-6)
    rows = (vae / "ledger.csv").read_text().strip().splitlines()
    assert len(rows) >= 2 and "resumed_from_step" in rows[0]
    assert json.loads((vae / "final" / "normalization.json").read_text())["video_scale"] > 0
    # a changed configuration never resumes from the old run's checkpoints: they are moved aside
    changed = _train(base, "--set", "vae.latent_channels=2", "--max-steps", "4")
    assert "written under another configuration" in changed.stdout
    assert list(base.glob("smoke/vae/checkpoints.stale-*/step_*.pt"))
    assert [p.name for p in (vae / "checkpoints").glob("step_*.pt")] == ["step_00000004.pt"]
