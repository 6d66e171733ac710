"""`pyramid-repro train-vae`: train the causal video VAE of a profile (PAPER.md section 4).

accelerate loop (one CPU process by default), gradient accumulation from vae.train.batch_size /
micro_batch_size, optional EMA, PatchGAN after vae.loss.gan_start_step, atomic checkpoints every
vae.train.ckpt_every steps and resume (the batch and noise of step n depend only on (seed, n), so a resumed run
gives the same loss trace as an uninterrupted one), one ledger row per job. Writes results/<profile>/vae/:
checkpoints/, final/ (save_pretrained + normalization.json), train_log.csv, ledger.csv.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pyramid_repro.cliutil import add_config_args, add_threads_arg, config_from_args
from pyramid_repro.config import Config, save_config
from pyramid_repro.provenance import provenance, write_json
from pyramid_repro.train.checkpoint import load_checkpoint, resume_point, save_checkpoint
from pyramid_repro.train.ledger import LedgerRecorder
from pyramid_repro.train.runtime import check_finite, make_accelerator
from pyramid_repro.vae.losses import VAELoss
from pyramid_repro.vae.model import build_vae


VAE_SECTIONS = ("seed", "data", "vae")  # what the VAE's training depends on (checkpoint fingerprint)


class ClipBank:
    """Training clips decoded once and kept in memory (synthetic/tiny scale); index -> (3, T, H, W)."""

    def __init__(self, dataset):
        self.ds, self.cache = dataset, {}

    def __len__(self) -> int:
        return len(self.ds)

    def batch(self, rows: torch.Tensor) -> torch.Tensor:
        out = []
        for r in rows.tolist():
            if r not in self.cache:
                self.cache[r] = self.ds[r]["video"]
            out.append(self.cache[r])
        return torch.stack(out)


def train_vae(cfg: Config, out: Path | None = None, max_steps: int | None = None) -> Path:
    from pyramid_repro.data.datasets import ClipDataset

    tc = cfg.vae.train
    out = out or cfg.results_dir("vae")
    out.mkdir(parents=True, exist_ok=True)
    micro = tc.micro_batch_size or tc.batch_size
    accum = max(1, tc.batch_size // micro)
    acc = make_accelerator(tc.precision)
    bank = ClipBank(ClipDataset.from_config(cfg, "train", "video", frames=cfg.vae.train_frames or None))

    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg)
    loss_fn = VAELoss(cfg.vae.loss)
    opt = torch.optim.AdamW(vae.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.99))
    models, opts = {"vae": vae}, {"opt": opt}
    if loss_fn.disc is not None:
        opt_d = torch.optim.AdamW(loss_fn.disc.parameters(), lr=tc.lr, betas=(0.5, 0.9))
        models["disc"], opts["opt_d"] = loss_fn.disc, opt_d
    # cosine decay after warmup: the tiny profile's short schedule needs the last steps at a small lr for PSNR
    lr_at = lambda s: min(1.0, (s + 1) / max(1, tc.warmup_steps)) * 0.5 * (1 + torch.cos(torch.tensor(3.14159 * s / tc.steps)).item())  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ema = {k: v.detach().clone() for k, v in vae.state_dict().items()} if tc.ema_decay > 0 else None

    step0, trace = 0, []
    ck = resume_point(out / "checkpoints", cfg.config_hash(VAE_SECTIONS))
    if ck is not None:
        st = load_checkpoint(ck, models, opts)
        step0, trace, ema = st["step"], st["extra"]["trace"], st["extra"].get("ema")
        sched.load_state_dict(st["extra"]["lr"])
        print(f"resuming VAE training from step {step0} ({ck})")
    stop = tc.steps if max_steps is None else min(tc.steps, max_steps)
    with LedgerRecorder(out / "ledger.csv", cfg, experiment="vae", stage="vae", resumed_from_step=step0) as led:
        bar = tqdm(range(step0, stop), initial=step0, total=tc.steps, desc="train VAE")
        samples = 0
        for step in bar:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            vae.train()
            total, parts = 0.0, {}
            for _ in range(accum):
                x = bank.batch(torch.randint(0, len(bank), (micro,), generator=g)).to(acc.device)
                with acc.autocast():
                    recon, mean, logvar = vae(x, generator=g)
                    loss, parts = loss_fn.generator_loss(x, recon.float(), mean.float(), logvar.float(), step)
                check_finite(loss, step, out / "checkpoints")
                acc.backward(loss / accum)
                total += float(loss) / accum
                samples += micro
                d_loss = loss_fn.discriminator_loss(x, recon, step)
                if d_loss is not None:
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(vae.parameters(), tc.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                with torch.no_grad():
                    for k, v in vae.state_dict().items():
                        ema[k].mul_(tc.ema_decay).add_(v.detach(), alpha=1 - tc.ema_decay)
            trace.append({"step": step + 1, "loss": total, **parts})
            if (step + 1) % tc.log_every == 0:
                bar.set_postfix(loss=f"{total:.4f}", mse=f"{parts['mse']:.5f}")
            if (step + 1) % tc.ckpt_every == 0 or step + 1 == stop:
                save_checkpoint(out / "checkpoints", step + 1, models, opts,
                                extra={"trace": trace, "ema": ema, "lr": sched.state_dict()})
        led.update(steps=stop - step0, samples=samples, tokens=0, flops=0.0)
    _write_log(out / "train_log.csv", trace)
    if stop < tc.steps:
        return out
    if ema is not None:
        vae.load_state_dict(ema)
    vae.eval()
    final = out / "final"
    vae.save_pretrained(final)
    save_config(cfg, final / "train_config.yaml")
    from pyramid_repro.vae.cache import compute_normalization

    norm = compute_normalization(vae, bank, cfg)
    write_json(final / "normalization.json", {**norm.to_dict(), "provenance": provenance(cfg)})
    return out


def _write_log(path: Path, trace: list[dict]) -> None:
    keys = sorted({k for r in trace for k in r}, key=lambda k: (k != "step", k != "loss", k))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(trace)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pyramid-repro train-vae",
                                 description="Train the profile's causal 3D video VAE (resumes from its newest "
                                 "checkpoint); writes results/<profile>/vae/.")
    add_config_args(ap)
    ap.add_argument("--out", type=Path, help="output folder (default results/<profile>/vae)")
    add_threads_arg(ap)
    ap.add_argument("--max-steps", type=int, help="stop after this many steps, leaving a checkpoint (tests)")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = train_vae(config_from_args(args), args.out, args.max_steps)
    print(f"VAE training done in {time.time() - t0:.1f} s: {out}")
    return 0
