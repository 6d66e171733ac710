"""VAE losses (docs/method.md §4): MSE x10, KL x1e-12, optional LPIPS (local weights only), PatchGAN."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from pyramid_repro.config import ConfigError, VAELossConfig


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean()


class PatchDiscriminator(nn.Module):
    """Per-frame 2D PatchGAN (pix2pix style): a grid of real/fake logits per frame."""

    def __init__(self, channels: int = 32, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(1, 2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = video.shape
        return self.net(video.transpose(1, 2).reshape(B * T, C, H, W))


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


class LPIPS(nn.Module):
    """LPIPS-style perceptual distance on torchvision VGG16 features, weights from a local file only.

    The file is a state dict with `features.*` (VGG16) and optionally `lin{0..4}.weight` (LPIPS linear heads);
    without heads the five layers are weighted equally. Never downloads.
    """

    LAYERS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3

    def __init__(self, path: str | Path | None):
        """`path`: the weights file; None builds the network without weights (the memory plan, on meta)."""
        super().__init__()
        from torchvision.models import vgg16

        state: dict[str, torch.Tensor] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"vae.loss.lpips_path={str(path)!r}: file not found. LPIPS needs local "
                                  "VGG16/LPIPS weights (never downloaded); set vae.loss.lpips_weight=0 to train "
                                  "without it")
            state = torch.load(p, map_location="cpu", weights_only=True)
        self.vgg = vgg16(weights=None).features[: self.LAYERS[-1] + 1].eval()
        self.vgg.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                  if k.startswith("features.")}, strict=False)
        chans = (64, 128, 256, 512, 512)
        self.lins = nn.ParameterList([nn.Parameter(state.get(f"lin{i}.weight",
                                                             torch.ones(1, c, 1, 1)).reshape(1, c, 1, 1),
                                                   requires_grad=False) for i, c in enumerate(chans)])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for q in self.parameters():
            q.requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def frames(v):
            B, C, T, H, W = v.shape
            return (v.transpose(1, 2).reshape(B * T, C, H, W) - self.shift) / self.scale

        x, y, d, i = frames(a), frames(b), 0.0, 0
        for j, layer in enumerate(self.vgg):
            x, y = layer(x), layer(y)
            if j in self.LAYERS:
                nx = x / (x.norm(dim=1, keepdim=True) + 1e-10)
                ny = y / (y.norm(dim=1, keepdim=True) + 1e-10)
                d = d + ((nx - ny) ** 2 * self.lins[i]).sum(1).mean()
                i += 1
        return d


class VAELoss(nn.Module):
    """Weighted sum of the configured terms; returns (total, parts) with parts as floats for the log."""

    def __init__(self, cfg: VAELossConfig):
        super().__init__()
        self.cfg = cfg
        self.lpips = LPIPS(cfg.lpips_path) if cfg.lpips_weight > 0 else None
        self.disc = PatchDiscriminator() if cfg.gan_weight > 0 else None

    def generator_loss(self, x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                       step: int) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg
        mse = F.mse_loss(recon, x)
        kl = kl_divergence(mean, logvar)
        total = c.mse_weight * mse + c.kl_weight * kl
        parts = {"mse": float(mse), "kl": float(kl)}
        if self.lpips is not None:
            lp = self.lpips(recon, x)
            total = total + c.lpips_weight * lp
            parts["lpips"] = float(lp)
        if self.disc is not None and step >= c.gan_start_step:
            g = -self.disc(recon).mean()
            total = total + c.gan_weight * g
            parts["gan_g"] = float(g)
        return total, parts

    def discriminator_loss(self, x: torch.Tensor, recon: torch.Tensor, step: int) -> torch.Tensor | None:
        if self.disc is None or step < self.cfg.gan_start_step:
            return None
        # one forward over real and fake frames (a data-parallel module may run one forward per backward)
        real, fake = self.disc(torch.cat([x, recon.detach()])).chunk(2)
        return hinge_d_loss(real, fake)
