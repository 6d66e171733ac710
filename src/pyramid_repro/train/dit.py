"""The DiT trainer: one curriculum stage of one experiment (docs/method.md §3 and §5, Table 4); the command is
commands/train_dit.py (`pyramid-repro train-dit`).

Reads only the normalised latent cache of the stage (results/<profile>/latents/<stage>/) and the prompts'
text embeddings; builds stage-homogeneous batches (train/sequences.py) for the pyramid or the full-sequence
baseline, trains the MM-DiT with flow matching through accelerate (gradient accumulation to the stage's global
batch, EMA weights for sampling), checkpoints atomically every `train.ckpt_every` steps and resumes from the
newest checkpoint; the data order and noise of step n depend only on (seed, stage, n), so a resumed run equals an
uninterrupted one. Every `train.fid_every` steps (or at the stage's `fid_points`) the main process saves the EMA
weights with the compute spent so far (fid_snapshots/step_<global step>/: `FidSnapshots`); the separate
`pyramid-repro fid-points` job (eval/fid_points.py) samples and scores them, so no training job waits for the
probe or samples while the other processes idle. At the end: final/ (EMA weights, save_pretrained), done.json and
one ledger row.

With `release` set the run fine-tunes an authors' release (docs/release.md §11): the first stage starts from the
release's transformer in its own class, captions come from the release's text encoders (releases.text_encoder_for)
and the latent cache from its VAE (encode-latents, releases.vae_for); the loop is the same.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pyramid_repro.config import RELEASE_KEYS, Config, ConfigError, CurriculumStage, for_experiment
from pyramid_repro.device import config_device
from pyramid_repro.generation.generate import TextCondition
from pyramid_repro.experiments import IMAGE_STAGE_UNUSED, stage_owner
from pyramid_repro.flow import PyramidSchedule, cost
from pyramid_repro.models import build_dit, encode_cached, load_dit
from pyramid_repro.models.attention import set_kernel
from pyramid_repro.provenance import provenance, write_csv, write_json
from pyramid_repro.releases import config_release, text_encoder_for
from pyramid_repro.train.loop import EMA, TrainingJob, TrainLoop, adamw, lr_scheduler, micro_batch_generator
from pyramid_repro.train.sequences import TrainBatch, draw_group_stage_frames, draw_stage_frame, make_batch
from pyramid_repro.vae.cache import LatentDataset

# a stage's fid.csv (written by eval/fid_points.py); units_file: the point's generated probe features and their
# captions, relative to the experiment folder (empty in a fid.csv from before the column)
FID_COLUMNS = ["step", "samples_seen", "tokens_seen", "flops", "device_hours", "fid", "fid_lo", "fid_hi", "backend",
               "stage", "units_file"]
SNAPSHOT_INFO = "fid_point.json"  # beside the EMA weights of a FID snapshot: what its fid.csv row needs
# settings that only the FID-point job reads: not part of a stage's checkpoint fingerprint
FID_JOB_ONLY: tuple[tuple[str, ...], ...] = (("train", "fid_guidance"),)


def owned_stage_dir(cfg: Config, experiment: str, stage: CurriculumStage) -> Path:
    """Folder of `experiment`'s run of `stage`: its own, or the one it shares (train.share_image_stage)."""
    owner = stage_owner(experiment, stage.kind, cfg.train.share_image_stage)
    return cfg.layout.stage(owner, stage.name)


def curriculum_stage(cfg: Config, name: str) -> tuple[int, CurriculumStage]:
    names = [s.name for s in cfg.train.curriculum]
    if name not in names:
        raise ConfigError(f"--stage {name!r} is not a stage of train.curriculum (one of {names})")
    i = names.index(name)
    return i, cfg.train.curriculum[i]


def step_key(seed: int, stage_index: int, step: int) -> int:
    """Random stream of optimizer step `step` of a stage (data order, stage/frame, noise, dropout): a pure function
    of (seed, stage, step), which is what makes resume == uninterrupted. Each micro-batch of the step draws from
    `train.loop.micro_batch_generator(step_key, micro_batch)`, whichever process computes it."""
    return seed * 1_000_003 + stage_index * 100_003 + step * 1009


class CaptionBank:
    """Text embeddings of every caption of a stage and of the empty prompt (last row), on the training device."""

    def __init__(self, captions: list[str], text: TextCondition):
        self.row = {c: i for i, c in enumerate(captions)}
        self.text = text
        self.empty_row = len(captions)

    @staticmethod
    def encode(encoder, captions: list[str], cache: Path, device: torch.device | str = "cpu") -> "CaptionBank":
        """Embed the distinct captions and the empty prompt once (cached on disk, text/encode_cached)."""
        uniq = sorted(set(captions))
        tokens, mask, pooled = encode_cached(encoder, uniq + [""], cache)
        return CaptionBank(uniq, TextCondition(tokens.to(device), mask.bool().to(device), pooled.to(device)))

    def batch(self, captions: list[str], drop: torch.Tensor | None = None) -> TextCondition:
        """Embeddings of `captions`; rows where the host bool tensor `drop` is set get the empty prompt."""
        rows = torch.tensor([self.row[c] for c in captions])
        if drop is not None:  # caption dropout for classifier-free guidance (Sec. 3.1)
            rows = torch.where(drop, torch.full_like(rows, self.empty_row), rows)
        return self.text.index(rows.to(self.text.tokens.device))

    def empty(self) -> TextCondition:
        return self.text.index([self.empty_row])


# what a DiT stage's training depends on (checkpoint fingerprint); eval/compute/report settings do not count
DIT_SECTIONS = ("seed", *RELEASE_KEYS, "data", "vae", "pyramid", "model", "text_encoder", "train")


def fid_point_steps(steps: int, fid_every: int, fid_points: int = 0) -> list[int]:
    """The steps of a stage after which a FID point is recorded: none when `fid_every` is 0; else `fid_points`
    points evenly spaced over the stage's `steps` (the last at its end) when given, or every `fid_every` steps and
    at the end."""
    if fid_every <= 0 or steps <= 0:
        return []
    if fid_points > 0:
        return sorted({max(1, round(steps * k / fid_points)) for k in range(1, fid_points + 1)})
    return sorted(set(range(fid_every, steps + 1, fid_every)) | {steps})


def stage_steps(cfg: Config, experiment: str, stage: CurriculumStage) -> int:
    """Optimizer steps of `experiment`'s run of `stage`: the profile's, or with train.match_compute_to as many as
    spend the reference experiment's expected FLOPs of that stage (its steps x batch x FLOPs per sample), so
    the full-sequence baseline and the uncompressed-history ablation are compared at equal compute."""
    ref = cfg.train.match_compute_to
    if ref is None or ref == experiment:
        return stage.steps
    if cfg.release:
        raise ConfigError(f"train.match_compute_to={ref!r} with release={cfg.release!r}: equal compute is measured "
                          "with the suite's FLOP model of model.* (flow/cost.py), not the release's architecture; "
                          "set train.match_compute_to=null to fine-tune every experiment for its own steps")
    ref_cfg = for_experiment(cfg, ref)
    ref_stage = next(s for s in ref_cfg.train.curriculum if s.name == stage.name)
    budget = ref_stage.steps * ref_stage.batch_size * cost.expected_sample_flops(ref_cfg, ref_stage)
    return max(1, round(budget / (stage.batch_size * cost.expected_sample_flops(cfg, stage))))


def stage_fingerprint(cfg: Config, stage: CurriculumStage) -> str:
    """Hash of the settings a stage's training reads (an image stage ignores IMAGE_STAGE_UNUSED), so the
    experiments that share an image stage agree on its checkpoints."""
    return cfg.config_hash(DIT_SECTIONS, (IMAGE_STAGE_UNUSED if stage.kind == "image" else ()) + FID_JOB_ONLY
                           + cfg.run_keys_to_drop())


@dataclass
class StageData:
    """What one stage trains on, on the training device: the normalised latents of the train split, their
    captions, the captions used for FID points (val split when there is one) and the caption embeddings."""

    latents: torch.Tensor  # (N, C, T, h, w)
    captions: list[str]
    val_captions: list[str]
    bank: CaptionBank

    @staticmethod
    def load(cfg: Config, stage: str, encoder, device: torch.device) -> "StageData":
        data = LatentDataset(cfg.layout.latents(), stage, "train")
        captions, val_caps = stage_captions(cfg, stage)
        bank = stage_caption_bank(cfg, stage, encoder, device, captions, val_caps)
        return StageData(data.all_latents().to(device), captions, val_caps, bank)

    def micro_batch(self, micro: int, schedule: PyramidSchedule, cfg: Config, g: torch.Generator,
                    draw: tuple[int, int] | None = None):
        """One stage-homogeneous micro-batch drawn with `g`: (TrainBatch, TextCondition). `draw`: its (stage,
        frame), drawn beforehand by `draw` (token-packed micro-batches)."""
        rows = torch.randint(0, len(self.latents), (micro,), generator=g, device=g.device)
        b = make_batch(self.latents[rows.to(self.latents.device)], schedule, cfg.pyramid, g, draw)
        drop = torch.rand(micro, generator=g, device=g.device).cpu() < cfg.text_encoder.caption_dropout
        return b, self.bank.batch([self.captions[r] for r in rows.tolist()], drop)

    def clips_batch(self, rows: torch.Tensor, drop: torch.Tensor, schedule: PyramidSchedule, cfg: Config,
                    g: torch.Generator, draw: tuple[int, int]):
        """The micro-batch of the given clip `rows` and caption dropout `drop` (host bool tensor), at the (stage,
        frame) `draw`, its noise drawn with `g`: (TrainBatch, TextCondition). For a video sync group, whose
        processes share the rows and the dropout (sync_group_micro_batches)."""
        b = make_batch(self.latents[rows.to(self.latents.device)], schedule, cfg.pyramid, g, draw)
        return b, self.bank.batch([self.captions[r] for r in rows.tolist()], drop)

    def draw(self, schedule: PyramidSchedule, cfg: Config, g: torch.Generator) -> tuple[int, int]:
        """The (stage, frame) of a token-packed micro-batch (sequences.draw_stage_frame)."""
        return draw_stage_frame(self.latents.shape[2], schedule, cfg.pyramid, g)

    def sample_tokens(self, cfg: Config, draw: tuple[int, int]) -> int:
        """Video tokens of one sample of this (stage, frame) draw (flow/cost.py, as TrainBatch.video_tokens)."""
        T, h, w = self.latents.shape[2:]
        return cost.draw_video_tokens(draw, T, h, w, cfg.model.patch_size, cfg.pyramid)


def stage_captions(cfg: Config, stage: str) -> tuple[list[str], list[str]]:
    """(train captions, FID-point captions) of a stage's latent cache, in cache order: the FID points use the val
    split's captions, or the train split's when the cache has no val items. Reads only the cache's index.json."""
    index = cfg.layout.latents() / stage / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: latent cache of stage {stage!r} not built; run "
                                "`pyramid-repro encode-latents`")
    items = json.loads(index.read_text())["items"]
    captions = [it["caption"] for it in items if it["split"] == "train"]
    if not captions:
        raise FileNotFoundError(f"{index}: no items of split 'train'")
    return captions, [it["caption"] for it in items if it["split"] == "val"] or captions


def stage_caption_bank(cfg: Config, stage: str, encoder, device: torch.device | str, captions: list[str],
                       val_captions: list[str]) -> CaptionBank:
    """The caption bank of a stage (train and FID-point captions, one text-cache entry shared by the trainer and
    the FID-point job)."""
    return CaptionBank.encode(encoder, captions + val_captions, cfg.layout.text_cache(stage), device)


def packed_size(sample_tokens: int, budget: int, remaining: int) -> int:
    """Samples of one token-packed micro-batch: as many as fit `budget` video tokens, at least one, at most the
    `remaining` samples of the process's share of the step."""
    return max(1, min(remaining, budget // max(1, sample_tokens)))


def sync_position(group: int, rank: int, world: int) -> tuple[int, int]:
    """(sync group, position in it) of process `rank` of `world` with train.video_sync_group = `group`: ranks
    r with the same r // group form a group."""
    if group < 1 or world % group:
        raise ConfigError(f"train.video_sync_group={group}: the {world} training process(es) cannot be split into "
                          f"sync groups of {group}; the process count must be a multiple of it (1 = off)")
    return divmod(rank, group)


def sync_group_micro_batches(data: StageData, schedule: PyramidSchedule, cfg: Config, key: int, group: int,
                             position: int, first: int, count: int, micro: int, budget: int,
                             device: torch.device | str = "cpu"):
    """The micro-batches of one process of a video sync group (train.video_sync_group; the authors'
    --sync_video_input, which trains several units of one video per step): ((TrainBatch, TextCondition), loss
    weight, last?), as StageLoop.micro_batches.

    The group's processes walk the same clip batches: `count` batches of `micro` clips numbered from `first`
    (fixed micro-batches), or with a token `budget` (micro_batch_tokens) `count` clips numbered from `first`,
    packed. Clip batch c draws from the group's stream `micro_batch_generator(key, -1 - c)` (negative indices: never
    a micro-batch's own stream) its units, one per position (sequences.draw_group_stage_frames: different units
    where the stage has enough of them; see there for larger groups), the clip rows and the caption dropout;
    position p learns unit p of them, with noise from `micro_batch_generator(key, c * group + p)`. Packed, the
    batch takes as many clips as fit the budget at the group's most expensive unit, so every position trains the
    same clips within the budget. A pure function of (seed, stage, step: `key`; group, position, first), so a
    resumed run draws what an uninterrupted one does; with fixed micro-batches a step's global batch is moreover
    the same for every process count that is a multiple of the group."""
    T = data.latents.shape[2]
    done = 0
    while done < count:
        c = first + done
        shared = micro_batch_generator(key, -1 - c, device)
        units = draw_group_stage_frames(T, schedule, cfg.pyramid, group, shared)
        n = min(packed_size(data.sample_tokens(cfg, u), budget, count - done) for u in units) if budget else micro
        rows = torch.randint(0, len(data.latents), (n,), generator=shared, device=shared.device)
        drop = torch.rand(n, generator=shared, device=shared.device).cpu() < cfg.text_encoder.caption_dropout
        g = micro_batch_generator(key, c * group + position, device)
        walked = n if budget else 1  # clips (packed) or clip batches (fixed) this micro-batch covers
        done += walked
        yield data.clips_batch(rows, drop, schedule, cfg, g, units[position]), walked / count, done == count


def training_owner(cfg: Config, experiment: str, stage: CurriculumStage) -> tuple[str, Config]:
    """The experiment that trains `experiment`'s `stage` and its config (train.share_image_stage)."""
    owner = stage_owner(experiment, stage.kind, cfg.train.share_image_stage)
    if owner == experiment:
        return experiment, cfg
    print(f"{experiment}/{stage.name} is the same computation as {owner}/{stage.name} (train.share_image_stage): "
          "training it there")
    return owner, for_experiment(cfg, owner)  # so its config and provenance are the owner's


def _initial_model(cfg: Config, experiment: str, idx: int, encoder) -> torch.nn.Module:
    """The first stage's model: the release's transformer when the config fine-tunes one (`release`, at
    `release_resolution`: its own class, every weight as the release has it), else a fresh MM-DiT; the later
    stages start from the previous stage's final weights (curriculum). In train mode, float32."""
    torch.manual_seed(cfg.training_seed)  # train.run's seed (cfg.seed for run 0)
    rel = config_release(cfg)
    prev = owned_stage_dir(cfg, experiment, cfg.train.curriculum[idx - 1]) / "final" if idx > 0 else None
    if prev is not None and not (prev / "config.json").exists():
        raise FileNotFoundError(f"stage {cfg.train.curriculum[idx].name!r} starts from {prev}, which does not "
                                f"exist: train stage {cfg.train.curriculum[idx - 1].name!r} first")
    if rel is not None:  # the release's class (models/registry.py knows it), whatever model.* says
        kernel = cfg.model.attention_kernel
        model = (load_dit(prev, kernel=kernel) if prev is not None
                 else set_kernel(rel.load_transformer(cfg.release_resolution), kernel))
        return model.float().train()
    model = build_dit(cfg, encoder.token_dim, encoder.pooled_dim)
    if prev is not None:
        model.load_state_dict(load_dit(prev).state_dict())
    return model


def flow_matching_loss(model: torch.nn.Module, batch: TrainBatch, text: TextCondition,
                       full_size: tuple[int, int]) -> torch.Tensor:
    """The DiT's training loss on one batch (docs/method.md §1-§3): the MSE between the model's velocity and the
    flow-matching target of `batch` (train/sequences.py make_batch), in fp32 whatever the autocast it runs under.
    The one forward + loss of the trainer and the benchmarks (benchmarks/gpu_check.py, pyramid_vs_fullseq.py)."""
    v = model(history=batch.history, current=batch.current, timestep=batch.timestep, tokens=text.tokens,
              text_mask=text.mask, pooled=text.pooled, full_size=full_size)
    return F.mse_loss(v.float(), batch.target.float())


class StageLoop(TrainLoop):
    """train/loop.py's loop filled in for one DiT curriculum stage: stage-homogeneous micro-batches (fixed or
    token-packed), flow-matching loss, samples/tokens/FLOPs spent, FID snapshots, done.json."""

    def __init__(self, cfg: Config, experiment: str, idx: int, st: CurriculumStage, out: Path, job: TrainingJob,
                 data: "StageData", model: torch.nn.Module, opt: torch.optim.Optimizer, sched_lr, ema: EMA,
                 max_steps: int | None):
        tc = cfg.train
        super().__init__(job, cfg, out, {"model": model}, {"optimizer": opt}, sched_lr, ema,
                         steps=stage_steps(cfg, experiment, st), max_steps=max_steps, grad_clip=tc.grad_clip,
                         log_every=tc.log_every, ckpt_every=tc.ckpt_every, experiment=experiment, stage=st.name,
                         label=f"{experiment}/{st.name}", desc=f"{experiment}/{st.name}")
        self.idx, self.st, self.data = idx, st, data
        # the step plan: micro-batches per optimizer step (Table 4's batch sizes are global), this process's share
        self.schedule = PyramidSchedule.from_config(cfg.pyramid)
        where = f"train.curriculum[{idx}] ({st.name})"
        self.micro = job.micro_batch_size(st.batch_size, st.micro_batch_size, where)
        self.mine = job.my_micro_batches(max(1, st.batch_size // self.micro), where)
        self.share = st.batch_size // job.world  # samples per process and step when micro-batches are token-packed
        if st.micro_batch_tokens and st.batch_size % job.world:
            raise ConfigError(f"{where}: batch_size {st.batch_size} cannot be split among {job.world} processes")
        # video sync groups (train.video_sync_group): this process's group and position in it
        self.group = tc.video_sync_group
        self.sync = sync_position(self.group, job.rank, job.world)
        self.fid_steps = set(fid_point_steps(self.steps, tc.fid_every, st.fid_points))
        self.stats = {"samples": 0, "tokens": 0, "flops": 0.0}
        self.latent_size = tuple(data.latents.shape[-2:])

    def micro_batches(self, step: int):
        """This process's micro-batches of one step: ((TrainBatch, TextCondition), loss weight, last?). Fixed
        micro-batches of `micro` samples, each weighted 1 / their count, or token-packed ones (micro_batch_tokens)
        weighted by their share of the process's samples, so the loss is the mean over samples either way."""
        cfg, st, data, dev, mine = self.cfg, self.st, self.data, self.job.device, self.mine
        key = step_key(cfg.training_seed, self.idx, step)
        if self.group > 1:  # the group's processes learn other units of the same clips
            count = self.share if st.micro_batch_tokens else len(mine)
            yield from sync_group_micro_batches(data, self.schedule, cfg, key, self.group, self.sync[1],
                                                self.sync[0] * count, count, self.micro, st.micro_batch_tokens, dev)
            return
        if not st.micro_batch_tokens:
            for j, mb in enumerate(mine):
                yield (data.micro_batch(self.micro, self.schedule, cfg, micro_batch_generator(key, mb, dev)),
                       1.0 / len(mine), j == len(mine) - 1)
            return
        drawn, share = 0, self.share
        while drawn < share:
            # generators keyed by the first sample's index in the global batch: distinct across processes, and
            # the same after a resume
            g = micro_batch_generator(key, self.job.rank * share + drawn, dev)
            draw = data.draw(self.schedule, cfg, g)
            n = packed_size(data.sample_tokens(cfg, draw), st.micro_batch_tokens, share - drawn)
            drawn += n
            yield data.micro_batch(n, self.schedule, cfg, g, draw), n / share, drawn == share

    def step(self, step: int) -> float:
        job, model, m = self.job, self.model, self.cfg.model
        loss_sum, counts = torch.zeros((), dtype=torch.float64, device=job.device), [0, 0, 0.0]
        for (b, text), weight, last in self.micro_batches(step):
            with job.accumulate(model, last=last):
                with job.accelerator.autocast():
                    loss = flow_matching_loss(model, b, text, self.latent_size)
                job.accelerator.backward(loss * weight)
            loss_sum += loss.detach().double() * weight
            video_tokens, n = b.video_tokens(m.patch_size), b.current.shape[0]
            counts[0] += n
            counts[1] += video_tokens
            counts[2] += cost.batch_training_flops(video_tokens, n, self.cfg.text_encoder.max_tokens, m)
        # one step's loss (mean over the global batch) and work (summed over the processes)
        total = job.sum_over_processes([float(loss_sum), *counts])
        for k, x in zip(("samples", "tokens", "flops"), total[1:]):
            self.stats[k] += type(self.stats[k])(x)
        return total[0] / job.world

    def extra_state(self) -> dict:
        return {"stats": self.stats}

    def load_extra_state(self, extra: dict) -> None:
        self.stats = extra["stats"]

    def started(self) -> None:
        self.job0 = dict(self.stats)  # this job's share of the work goes to its ledger row
        self.snapshots = FidSnapshots(self.out / "fid_snapshots", self.cfg, self.experiment, self.idx,
                                      self.latent_size, fresh=self.step0 == 0 and self.job.main)

    def trace_rows(self) -> list[dict]:
        return [{"step": i, "loss": v} for i, v in enumerate(self.trace, 1)]

    def postfix(self, done: int, loss: float) -> dict[str, str] | None:
        if done % self.log_every == 0 or done == self.stop:  # the progress line (rule log) shows the recent loss
            window = self.trace[-self.log_every:]
            return {"loss": f"{loss:.4f}", "mean": f"{sum(window) / len(window):.4f}"}
        return None

    def stepped(self, done: int) -> None:
        if done in self.fid_steps:
            weights = self.ema.state_dict()  # every process: sharded, the EMA is gathered to the main process
            if self.job.main:
                with self.job.holding(self.model, weights) as model:
                    self.snapshots.save(model, done, self.stats, time.time() - self.t_start)

    def work(self) -> dict:
        return {k: self.stats[k] - self.job0[k] for k in ("samples", "tokens", "flops")}

    def counts(self) -> dict:
        return dict(self.stats)  # already summed over the processes (step)

    def finish(self, final: torch.nn.Module) -> None:
        trace, stats, job = self.trace, self.stats, self.job
        write_json(self.out / "done.json", {"experiment": self.experiment, "stage": self.stage, "steps": self.steps,
                                            "first_loss_mean10": sum(trace[:10]) / max(1, len(trace[:10])),
                                            "last_loss_mean10": sum(trace[-10:]) / max(1, len(trace[-10:])),
                                            "samples": stats["samples"], "tokens": stats["tokens"],
                                            "flops": stats["flops"], "processes": job.world,
                                            "device": str(job.device),
                                            "provenance": provenance(self.cfg, experiment=self.experiment)})


def train_stage(cfg: Config, experiment: str, stage_name: str, out: Path | None = None,
                max_steps: int | None = None) -> Path:
    """Train one curriculum stage; returns the stage folder (with done.json when finished)."""
    # 1. which run this is, where it writes, on which device and processes
    idx, st = curriculum_stage(cfg, stage_name)
    experiment, cfg = training_owner(cfg, experiment, st)
    out = out or cfg.layout.stage(experiment, stage_name)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    job = TrainingJob(config_device(cfg), tc.precision, out / "checkpoints", stage_fingerprint(cfg, st),
                      unused_parameters=True, sharding=cfg.compute.sharding)
    dev = job.device

    # 2. data, model, optimizer, EMA, on the device
    encoder = text_encoder_for(cfg, dev)  # the release's text encoders when fine-tuning one
    data = StageData.load(cfg, stage_name, encoder, dev)
    model = _initial_model(cfg, experiment, idx, encoder)
    del encoder  # frozen; only the caption embeddings are needed from here (the paper's T5-XXL is 19 GB in fp32)
    model.set_activation_checkpointing(tc.activation_checkpointing)  # the first blocks recompute in backward
    opt = adamw(model.parameters(), dev, lr=tc.lr, weight_decay=tc.weight_decay, betas=tuple(tc.betas))
    sched_lr = lr_scheduler(opt, tc.warmup_steps)
    models, opts = job.prepare({"model": model}, {"optimizer": opt})
    model, opt = models["model"], opts["optimizer"]
    ema = EMA(job.unwrap(model), tc.ema_decay)

    # 3. the loop (train/loop.py): resume, steps, checkpoints, ledger, final/ and done.json
    StageLoop(cfg, experiment, idx, st, out, job, data, model, opt, sched_lr, ema, max_steps).run()
    return out


def snapshot_dir(folder: Path, global_step: int) -> Path:
    """One FID snapshot of a stage: <stage>/fid_snapshots/step_<global step>/ (EMA weights + SNAPSHOT_INFO)."""
    return folder / f"step_{global_step}"


def list_snapshots(folder: Path) -> list[Path]:
    """The complete FID snapshots in `folder` (those with their SNAPSHOT_INFO), by step."""
    found = [p for p in folder.glob("step_*") if p.is_dir() and (p / SNAPSHOT_INFO).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_", 1)[1]))


def _previous_stats(cfg: Config, experiment: str, idx: int) -> dict:
    """Cumulative samples/tokens/FLOPs of the earlier curriculum stages (done.json) and their device-hours (the
    last FID snapshot's, itself cumulative), for compute-axis FID curves."""
    acc = {"samples": 0, "tokens": 0, "flops": 0.0, "device_hours": 0.0}
    for s in cfg.train.curriculum[:idx]:
        folder = owned_stage_dir(cfg, experiment, s)
        f = folder / "done.json"
        if f.exists():
            d = json.loads(f.read_text())
            for k in ("samples", "tokens", "flops"):
                acc[k] += d.get(k) or 0
        snaps = list_snapshots(folder / "fid_snapshots")
        if snaps:
            acc["device_hours"] = float(json.loads((snaps[-1] / SNAPSHOT_INFO).read_text())["device_hours"])
    return acc


class FidSnapshots:
    """The EMA weights of a stage at its FID-point steps (fid_point_steps), for the FID-vs-compute curves (paper
    Sec. 5, Fig. 5-6 analogue: FID convergence of the spatial pyramid vs full-sequence flow matching).

    Each snapshot is <stage>/fid_snapshots/step_<global step>/: the model's save_pretrained (loadable with
    models.load_dit) and SNAPSHOT_INFO with the step (earlier curriculum stages' steps included), samples, tokens,
    FLOPs and device-hours spent so far, earlier stages included. `pyramid-repro fid-points` samples and scores
    them (eval/fid_points.py). Written by the main process only, atomically (a folder renamed into place); a
    snapshot already there is kept (a resumed job reaches the same weights again), and a fresh start (step 0)
    deletes the stage's snapshots and FID points of an earlier run."""

    def __init__(self, folder: Path, cfg: Config, experiment: str, stage_index: int, latent_size: tuple[int, int],
                 fresh: bool):
        self.folder, self.cfg, self.latent_size = folder, cfg, [int(x) for x in latent_size]
        self.experiment, self.stage = experiment, cfg.train.curriculum[stage_index].name
        self.prev_steps = sum(stage_steps(cfg, experiment, s) for s in cfg.train.curriculum[:stage_index])
        self.prev = _previous_stats(cfg, experiment, stage_index)
        if fresh:
            for stale in (folder, folder.parent / "fid_points"):
                shutil.rmtree(stale, ignore_errors=True)
            (folder.parent / "fid.csv").unlink(missing_ok=True)

    def info(self, step: int, stats: dict, seconds: float) -> dict:
        """What the stage's fid.csv row of the point after optimizer step `step` of this stage needs."""
        prev = self.prev
        return {"experiment": self.experiment, "stage": self.stage, "stage_step": step,
                "step": self.prev_steps + step, "samples_seen": prev["samples"] + stats["samples"],
                "tokens_seen": prev["tokens"] + stats["tokens"], "flops": prev["flops"] + stats["flops"],
                "device_hours": prev["device_hours"] + seconds / 3600.0, "latent_size": self.latent_size}

    def save(self, model: torch.nn.Module, step: int, stats: dict, seconds: float) -> Path:
        """Save `model` (an unsharded module holding the EMA weights: TrainingJob.holding) as the snapshot of
        `step`."""
        info = self.info(step, stats, seconds)
        dest = snapshot_dir(self.folder, info["step"])
        if (dest / SNAPSHOT_INFO).is_file():
            return dest
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".{dest.name}-"))
        model.save_pretrained(tmp)
        write_json(tmp / SNAPSHOT_INFO, info)
        shutil.rmtree(dest, ignore_errors=True)  # an incomplete one (no SNAPSHOT_INFO) of a killed job
        os.replace(tmp, dest)
        return dest


def collect_fid_curve(cfg: Config, experiment: str, out: Path) -> Path:
    """Concatenate the stages' fid.csv files into one curve (results/<profile>/<experiment>/fid_curve.csv), with
    every FID_COLUMNS column (a fid.csv from before a column was added leaves its cells empty). A shared image
    stage's units_file names a file of its owner's folder: it is made relative to `experiment`'s."""
    rows = []
    for s in cfg.train.curriculum:
        folder = owned_stage_dir(cfg, experiment, s)
        f = folder / "fid.csv"
        if f.exists():
            for row in csv.DictReader(f.open()):
                if row.get("units_file"):
                    target = cfg.layout.experiment(stage_owner(experiment, s.kind, cfg.train.share_image_stage))
                    row["units_file"] = os.path.relpath(target / row["units_file"],
                                                        cfg.layout.experiment(experiment))
                rows.append(row)
    write_csv(out, FID_COLUMNS, rows)
    return out
