"""The VAE trainer: the causal video VAE of a profile (docs/method.md §4); the command is commands/train_vae.py
(`pyramid-repro train-vae`).

The shared loop of train/loop.py (one CPU process by default), gradient accumulation from vae.train.batch_size /
micro_batch_size, optional EMA, PatchGAN after vae.loss.gan_start_step, atomic checkpoints every
vae.train.ckpt_every steps and resume (the batch and noise of step n depend only on (seed, n), so a resumed run
gives the same loss trace as an uninterrupted one), one ledger row per job. Writes results/<profile>/vae/:
checkpoints/, final/ (save_pretrained + normalization.json), train_log.csv, ledger.csv.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pyramid_repro.config import Config
from pyramid_repro.data.datasets import ClipDataset
from pyramid_repro.device import config_device
from pyramid_repro.provenance import provenance, write_json
from pyramid_repro.train.loop import EMA, TrainingJob, TrainLoop, adamw, lr_scheduler, micro_batch_generator
from pyramid_repro.vae.handle import compute_normalization
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


def random_crops(clips: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A random window of each clip (B, 3, T, H, W), `size` x `size` pixels (a side longer than the frame's takes
    the whole side), its corner drawn uniformly with `generator` (vae.train_crop, as the authors train their VAE on
    256 x 256 crops); `size` 0, or a window that is the whole frame: the clips as they are, nothing drawn."""
    H, W = clips.shape[-2:]
    h, w = min(size, H), min(size, W)
    if not size or (h == H and w == W):
        return clips
    n = clips.shape[0]
    top = torch.randint(0, H - h + 1, (n,), generator=generator, device=generator.device).tolist()
    left = torch.randint(0, W - w + 1, (n,), generator=generator, device=generator.device).tolist()
    return torch.stack([c[..., t:t + h, x:x + w] for c, t, x in zip(clips, top, left)])


def vae_step_key(seed: int, step: int) -> int:
    """Random stream of VAE optimizer step `step` (clips drawn, posterior noise); micro-batch m of the step draws
    from `train.loop.micro_batch_generator(vae_step_key, m)`, whichever process computes it."""
    return seed * 1_000_003 + step


class VAELoop(TrainLoop):
    """train/loop.py's loop filled in for the VAE: micro-batches of clips, the generator loss (reconstruction, KL,
    perceptual, adversarial: vae/losses.py) and the discriminator's own step per micro-batch; at the end the
    latent normalisation statistics beside the final weights."""

    def __init__(self, cfg: Config, out: Path, job: TrainingJob, bank: ClipBank, loss_fn: VAELoss,
                 models: dict, opts: dict, sched, ema: EMA | None, micro: int, mine: range,
                 max_steps: int | None):
        tc = cfg.vae.train
        super().__init__(job, cfg, out, models, opts, sched, ema, steps=tc.steps, max_steps=max_steps,
                         grad_clip=tc.grad_clip, log_every=tc.log_every, ckpt_every=tc.ckpt_every,
                         experiment="vae", stage="vae", label="VAE training", desc="train VAE")
        self.bank, self.loss_fn, self.micro, self.mine = bank, loss_fn, micro, mine
        self.samples, self.parts = 0, {}

    def step(self, step: int) -> float:
        job, vae, loss_fn, mine, dev = self.job, self.model, self.loss_fn, self.mine, self.job.device
        total, self.parts = torch.zeros((), dtype=torch.float64, device=dev), {}
        for j, mb in enumerate(mine):
            g = micro_batch_generator(vae_step_key(self.cfg.seed, step), mb, dev)
            rows = torch.randint(0, len(self.bank), (self.micro,), generator=g, device=g.device)
            x = random_crops(self.bank.batch(rows.cpu()), self.cfg.vae.train_crop, g).to(dev)
            with job.accumulate(vae, last=j == len(mine) - 1):
                with job.accelerator.autocast():
                    recon, mean, logvar = vae(x, generator=g)
                    loss, self.parts = loss_fn.generator_loss(x, recon.float(), mean.float(), logvar.float(), step)
                job.accelerator.backward(loss / len(mine))
            total += loss.detach().double() / len(mine)
            self.samples += self.micro
            d_loss = loss_fn.discriminator_loss(x, recon, step)
            if d_loss is not None:
                opt_d = self.optimizers["opt_d"]
                opt_d.zero_grad(set_to_none=True)
                job.accelerator.backward(d_loss)
                opt_d.step()
        return job.sum_over_processes([float(total)])[0] / job.world

    def trace_entry(self, step: int, loss: float) -> dict:
        return {"step": step + 1, "loss": loss, **self.parts}

    def postfix(self, done: int, loss: float) -> dict[str, str] | None:
        if done % self.log_every == 0:
            return {"loss": f"{loss:.4f}", "mse": f"{self.parts['mse']:.5f}"}
        return None

    def work(self) -> dict:
        return {"samples": int(self.job.sum_over_processes([self.samples])[0]), "tokens": 0, "flops": 0.0}

    def counts(self) -> dict:
        return {"samples": self.samples * self.job.world}  # every process computes as many micro-batches

    def finish(self, final: torch.nn.Module) -> None:
        norm = compute_normalization(final, self.bank, self.cfg)
        write_json(self.out / "final" / "normalization.json", {**norm.to_dict(), "provenance": provenance(self.cfg)})


def train_vae(cfg: Config, out: Path | None = None, max_steps: int | None = None) -> Path:
    """Train the profile's VAE (resuming from its newest checkpoint); returns the output folder."""
    # 1. where, on which device and processes
    tc = cfg.vae.train
    out = out or cfg.layout.vae()
    out.mkdir(parents=True, exist_ok=True)
    job = TrainingJob(config_device(cfg), tc.precision, out / "checkpoints", cfg.config_hash(VAE_SECTIONS))
    if cfg.compute.sharding != "none" and job.main:
        print(f"compute.sharding={cfg.compute.sharding} shards the DiT stages; the VAE (a small model) trains "
              "data-parallel with DDP, every process holding all of its weights")
    dev = job.device
    micro = job.micro_batch_size(tc.batch_size, tc.micro_batch_size, "vae.train")
    mine = job.my_micro_batches(max(1, tc.batch_size // micro), "vae.train")
    bank = ClipBank(ClipDataset.from_config(cfg, "train", "video", frames=cfg.vae.train_frames or None))

    # 2. models and optimizers (the PatchGAN discriminator when vae.loss.gan_weight > 0), on the device
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg)
    loss_fn = VAELoss(cfg.vae.loss)
    opt = adamw(vae.parameters(), dev, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.99))
    sched = lr_scheduler(opt, tc.warmup_steps, decay_steps=tc.steps)
    models, opts = {"vae": vae}, {"opt": opt}
    if loss_fn.disc is not None:
        opts["opt_d"] = torch.optim.AdamW(loss_fn.disc.parameters(), lr=tc.lr, betas=(0.5, 0.9))
        models["disc"] = loss_fn.disc
    models, opts = job.prepare(models, opts)
    loss_fn.to(dev)
    loss_fn.disc = models.get("disc")
    ema = EMA(job.unwrap(models["vae"]), tc.ema_decay) if tc.ema_decay > 0 else None

    # 3. the loop (train/loop.py): resume, steps, checkpoints, ledger, final/ and the normalisation statistics
    VAELoop(cfg, out, job, bank, loss_fn, models, opts, sched, ema, micro, mine, max_steps).run()
    return out
