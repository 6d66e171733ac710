"""`pyramid-repro train-vae`: train the causal video VAE of a profile (docs/method.md §4).

accelerate loop (one CPU process by default), gradient accumulation from vae.train.batch_size /
micro_batch_size, optional EMA, PatchGAN after vae.loss.gan_start_step, atomic checkpoints every
vae.train.ckpt_every steps and resume (the batch and noise of step n depend only on (seed, n), so a resumed run
gives the same loss trace as an uninterrupted one), one ledger row per job. Writes results/<profile>/vae/:
checkpoints/, final/ (save_pretrained + normalization.json), train_log.csv, ledger.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pyramid_repro.cliutil import add_config_args, add_threads_arg, config_from_args
from pyramid_repro.config import Config, save_config
from pyramid_repro.provenance import provenance, write_json
from pyramid_repro.device import config_device
from pyramid_repro.train.ledger import LedgerRecorder
from pyramid_repro.train.loop import EMA, TrainingJob, adamw, check_finite, micro_batch_generator, write_trace
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


def vae_step_key(seed: int, step: int) -> int:
    """Random stream of VAE optimizer step `step` (clips drawn, posterior noise); micro-batch m of the step draws
    from `train.loop.micro_batch_generator(vae_step_key, m)`, whichever process computes it."""
    return seed * 1_000_003 + step


def _lr_schedule(tc):
    """Linear warm-up then cosine decay: the tiny profile's short schedule needs its last steps at a small lr."""
    return lambda s: (min(1.0, (s + 1) / max(1, tc.warmup_steps))
                      * 0.5 * (1 + torch.cos(torch.tensor(3.14159 * s / tc.steps)).item()))


def train_vae(cfg: Config, out: Path | None = None, max_steps: int | None = None) -> Path:
    from pyramid_repro.data.datasets import ClipDataset

    # 1. where, on which device and processes
    tc = cfg.vae.train
    out = out or cfg.layout.vae()
    out.mkdir(parents=True, exist_ok=True)
    job = TrainingJob(config_device(cfg), tc.precision, out / "checkpoints", cfg.config_hash(VAE_SECTIONS))
    dev = job.device
    micro = job.micro_batch_size(tc.batch_size, tc.micro_batch_size, "vae.train")
    mine = job.my_micro_batches(max(1, tc.batch_size // micro), "vae.train")
    bank = ClipBank(ClipDataset.from_config(cfg, "train", "video", frames=cfg.vae.train_frames or None))

    # 2. models and optimizers (the PatchGAN discriminator when vae.loss.gan_weight > 0), on the device
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg)
    loss_fn = VAELoss(cfg.vae.loss)
    opt = adamw(vae.parameters(), dev, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_schedule(tc))
    models, opts = {"vae": vae}, {"opt": opt}
    if loss_fn.disc is not None:
        opts["opt_d"] = torch.optim.AdamW(loss_fn.disc.parameters(), lr=tc.lr, betas=(0.5, 0.9))
        models["disc"] = loss_fn.disc
    prepared = job.accelerator.prepare(*models.values(), *opts.values())
    models, opts = dict(zip(models, prepared[:len(models)])), dict(zip(opts, prepared[len(models):]))
    vae, opt = models["vae"], opts["opt"]
    loss_fn.to(dev)
    loss_fn.disc = models.get("disc")
    ema = EMA(job.unwrap(vae), tc.ema_decay) if tc.ema_decay > 0 else None

    # 3. resume
    step0, trace = 0, []
    state = job.resume({k: job.unwrap(m) for k, m in models.items()}, opts)
    if state is not None:
        step0, trace = state["step"], state["extra"]["trace"]
        if ema is not None and state["extra"].get("ema") is not None:
            ema.load(state["extra"]["ema"])
        sched.load_state_dict(state["extra"]["lr"])
        print(f"resuming VAE training from step {step0} ({state['path']})")
    stop = tc.steps if max_steps is None else min(tc.steps, max_steps)

    # 4. the loop
    with LedgerRecorder(out / "ledger.csv", cfg, experiment="vae", stage="vae", resumed_from_step=step0,
                        enabled=job.main, processes=job.world, device=dev) as led:
        bar = tqdm(range(step0, stop), initial=step0, total=tc.steps, desc="train VAE", disable=not job.main)
        samples = 0
        for step in bar:
            vae.train()
            total, parts = torch.zeros((), dtype=torch.float64, device=dev), {}
            for j, mb in enumerate(mine):
                g = micro_batch_generator(vae_step_key(cfg.seed, step), mb, dev)
                rows = torch.randint(0, len(bank), (micro,), generator=g, device=g.device)
                x = bank.batch(rows.cpu()).to(dev)
                with job.accumulate(vae, last=j == len(mine) - 1):
                    with job.accelerator.autocast():
                        recon, mean, logvar = vae(x, generator=g)
                        loss, parts = loss_fn.generator_loss(x, recon.float(), mean.float(), logvar.float(), step)
                    job.accelerator.backward(loss / len(mine))
                total += loss.detach().double() / len(mine)
                samples += micro
                d_loss = loss_fn.discriminator_loss(x, recon, step)
                if d_loss is not None:
                    opts["opt_d"].zero_grad(set_to_none=True)
                    job.accelerator.backward(d_loss)
                    opts["opt_d"].step()
            loss_value = job.sum_over_processes([float(total)])[0] / job.world
            check_finite(loss_value, step, out / "checkpoints")
            if tc.grad_clip:
                job.accelerator.clip_grad_norm_(vae.parameters(), tc.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(job.unwrap(vae))
            trace.append({"step": step + 1, "loss": loss_value, **parts})
            if (step + 1) % tc.log_every == 0:
                bar.set_postfix(loss=f"{loss_value:.4f}", mse=f"{parts['mse']:.5f}")
            if (step + 1) % tc.ckpt_every == 0 or step + 1 == stop:
                job.save(step + 1, models, opts, {"trace": trace, "ema": ema.state_dict() if ema else None,
                                                   "lr": sched.state_dict()})
        led.update(steps=stop - step0, samples=int(job.sum_over_processes([samples])[0]), tokens=0, flops=0.0)
    job.accelerator.wait_for_everyone()
    if not job.main:
        return out

    # 5. outputs: the loss log; at the end the (EMA) weights and the latent normalisation statistics
    write_trace(out / "train_log.csv", trace)
    if stop < tc.steps:
        return out
    final_vae = job.unwrap(vae)
    if ema is not None:
        final_vae.load_state_dict(ema.state_dict())
    final_vae.eval()
    final = out / "final"
    final_vae.save_pretrained(final)
    save_config(cfg, final / "train_config.yaml")
    from pyramid_repro.vae.handle import compute_normalization

    norm = compute_normalization(final_vae, bank, cfg)
    write_json(final / "normalization.json", {**norm.to_dict(), "provenance": provenance(cfg)})
    return out


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
