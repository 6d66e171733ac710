"""`pyramid-repro eval-vae`: PSNR and SSIM of the trained VAE on held-out clips, and a reconstruction grid.

Writes results/<profile>/vae/eval.json (psnr, ssim in dB / [0, 1], per-clip lists, the VAE folder and kind, the
clip shape, provenance) and results/<profile>/vae/reconstructions.png (originals over reconstructions, frames left
to right). `--vae <folder>` evaluates another VAE folder instead of the profile's trained one: the suite's own
(train-vae's final/) or the authors' released `causal_video_vae/` (vae/official.py). The release needs 1 + 8k
frames and sides divisible by 8, so clips that are not lose their last frames and are centre-cropped to the
largest shape that is (eval.json: clip_shape beside data_clip_shape).

Its command line (options, messages) is commands/eval_vae.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pyramid_repro.config import Config
from pyramid_repro.data.datasets import ClipDataset
from pyramid_repro.device import config_device
from pyramid_repro.provenance import provenance, write_json
from pyramid_repro.vae.handle import load_vae
from pyramid_repro.vae.official import is_official_vae_folder


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR (dB) of videos in [-1, 1] (peak-to-peak 2), over all pixels of the clip."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(4.0 / mse)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Per-sample SSIM (Wang et al. 2004; Gaussian window, K1 = 0.01, K2 = 0.03) of (B, 3, T, H, W) videos
    in [-1, 1], computed per frame and channel on [0, 1] and averaged."""
    B, C, T, H, W = x.shape
    a = ((x + 1) / 2).transpose(1, 2).reshape(B * T * C, 1, H, W)
    b = ((y + 1) / 2).transpose(1, 2).reshape(B * T * C, 1, H, W)
    k = min(window, H, W) | 1
    g = torch.exp(-((torch.arange(k) - k // 2) ** 2) / (2 * sigma**2))
    g = (g / g.sum()).to(a)
    w = (g[:, None] * g[None, :]).view(1, 1, k, k)
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    s_aa = F.conv2d(a * a, w) - mu_a**2
    s_bb = F.conv2d(b * b, w) - mu_b**2
    s_ab = F.conv2d(a * b, w) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return m.flatten(1).mean(1).view(B, T * C).mean(1)


def reconstruction_grid(orig: torch.Tensor, recon: torch.Tensor, path: Path, max_clips: int = 4) -> None:
    """PNG: for each clip a row of original frames above a row of reconstructed frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, T = min(max_clips, orig.shape[0]), orig.shape[2]
    fig, axes = plt.subplots(2 * n, T, figsize=(0.8 * T + 1, 1.7 * n), squeeze=False)
    for i in range(n):
        for row, v, label in ((2 * i, orig[i], "original"), (2 * i + 1, recon[i], "reconstruction")):
            for t in range(T):
                ax = axes[row][t]
                ax.imshow(((v[:, t].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row][0].set_ylabel(label, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def valid_clip_shape(shape: tuple[int, int, int], temporal: int, spatial: int) -> tuple[int, int, int]:
    """The largest (T, H, W) within `shape` with T = 1 + k*temporal and H, W multiples of `spatial`; ValueError
    when the clip is smaller than one spatial block."""
    T, H, W = shape
    if H < spatial or W < spatial:
        raise ValueError(f"clips of {T} frames x {H} x {W} are smaller than the VAE's {spatial} x {spatial} "
                         f"pixel block (it needs H, W divisible by {spatial} and 1 + {temporal}k frames)")
    return 1 + (T - 1) // temporal * temporal, H // spatial * spatial, W // spatial * spatial


def fit_clips(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) -> its first shape[0] frames, centre-cropped to shape[1] x shape[2]."""
    T, H, W = shape
    top, left = (x.shape[3] - H) // 2, (x.shape[4] - W) // 2
    return x[:, :, :T, top:top + H, left:left + W]


@torch.no_grad()
def evaluate(cfg: Config, out: Path | None = None, vae_folder: Path | None = None) -> dict:
    """PSNR/SSIM of a VAE on held-out clips; writes eval.json and reconstructions.png into `out`.

    vae_folder: the VAE to evaluate (default: the profile's trained one, layout.vae_final); the suite's own or the
    authors' release folder (detected by its config.json). `out` defaults to layout.vae for the profile's VAE and
    to layout.vae/eval_<folder name> for any other, so the trained VAE's eval.json is never overwritten."""
    vae_dir = Path(vae_folder or cfg.layout.vae_final())
    if out is None:
        own = vae_folder is None or vae_dir.resolve() == cfg.layout.vae_final().resolve()
        out = cfg.layout.vae() if own else cfg.layout.vae() / f"eval_{vae_dir.resolve().name}"
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    kind = "official" if is_official_vae_folder(vae_dir) else "suite"
    vae = load_vae(vae_dir, cfg.vae.encode_chunk_frames, config_device(cfg))
    ds = ClipDataset.from_config(cfg, "test", "video")
    data_shape = (ds.frames, ds.height, ds.width)
    clip_shape = data_shape
    if kind == "official":
        clip_shape = valid_clip_shape(data_shape, vae.model.temporal_compression, vae.model.spatial_compression)
        if clip_shape != data_shape:
            print(f"eval-vae: clips of {data_shape[0]} frames x {data_shape[1]} x {data_shape[2]} trimmed/cropped "
                  f"to {clip_shape[0]} x {clip_shape[1]} x {clip_shape[2]} (the official VAE needs 1 + "
                  f"{vae.model.temporal_compression}k frames and sides divisible by {vae.model.spatial_compression})")
    n = min(cfg.vae.eval_clips, len(ds))
    ps, ss, first = [], [], None
    for b in range(0, n, 8):
        x = fit_clips(torch.stack([ds[i]["video"] for i in range(b, min(b + 8, n))]), clip_shape)
        # round-trip through the normalised latents, exactly what the DiT sees and the sampler decodes
        y = vae.decode(vae.encode(x.to(vae.device))).float().cpu()
        ps += psnr(x, y).tolist()
        ss += ssim(x, y).tolist()
        if first is None:
            first = (x, y)
    reconstruction_grid(first[0], first[1], folder / "reconstructions.png")
    result = {"psnr": sum(ps) / len(ps), "ssim": sum(ss) / len(ss), "n_clips": n, "split": "test",
              "vae_folder": str(vae_dir), "vae_kind": kind, "clip_shape": list(clip_shape),
              "data_clip_shape": list(data_shape), "psnr_per_clip": ps, "ssim_per_clip": ss,
              "provenance": provenance(cfg)}
    write_json(folder / "eval.json", result)
    return result
