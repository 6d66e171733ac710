"""`pyramid-repro train-dit`: one curriculum stage of one experiment (PAPER.md sections 3 and 5, Table 4).

Reads only the normalised latent cache of the stage (results/<profile>/latents/<stage>/) and the prompts'
text embeddings; builds stage-homogeneous batches (train/sequences.py) for the pyramid or the full-sequence
baseline, trains the MM-DiT with flow matching through accelerate (gradient accumulation to the stage's global
batch, EMA weights for sampling), checkpoints atomically every `train.ckpt_every` steps and resumes from the
newest checkpoint; the data order and noise of step n depend only on (seed, stage, n), so a resumed run equals an
uninterrupted one. Every `train.fid_every` steps it samples first frames and records the probe FID
(results/<profile>/<experiment>/dit/<stage>/fid.csv). At the end: final/ (EMA weights, save_pretrained),
done.json and one ledger row.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pyramid_repro.cliutil import add_config_args, add_threads_arg, config_from_args
from pyramid_repro.config import Config, ConfigError, CurriculumStage, save_config
from pyramid_repro.eval.generate import TextCondition, generate_latents
from pyramid_repro.experiments import IMAGE_STAGE_UNUSED, stage_owner
from pyramid_repro.flow import PyramidSchedule, cost
from pyramid_repro.provenance import provenance, write_json
from pyramid_repro.train.sequences import make_batch

FID_COLUMNS = ["step", "samples_seen", "tokens_seen", "flops", "device_hours", "fid", "backend", "stage"]


def stage_dir(res: Path, experiment: str, stage: str) -> Path:
    return res / experiment / "dit" / stage


def final_model_dir(res: Path, experiment: str, stage: str) -> Path:
    """Folder of a stage's final (EMA) weights, loadable with `load_dit_for_sampling`."""
    return stage_dir(res, experiment, stage) / "final"


def owned_stage_dir(cfg: Config, experiment: str, stage: CurriculumStage) -> Path:
    """Folder of `experiment`'s run of `stage`: its own, or the one it shares (train.share_image_stage)."""
    owner = stage_owner(experiment, stage.kind, cfg.train.share_image_stage)
    return stage_dir(Path(cfg.results) / cfg.profile, owner, stage.name)


def _stage(cfg: Config, name: str) -> tuple[int, CurriculumStage]:
    names = [s.name for s in cfg.train.curriculum]
    if name not in names:
        raise ConfigError(f"--stage {name!r} is not a stage of train.curriculum (one of {names})")
    i = names.index(name)
    return i, cfg.train.curriculum[i]


def step_generator(seed: int, stage_index: int, step: int, rank: int = 0) -> torch.Generator:
    """Randomness of optimizer step `step` on process `rank` (data order, stage/frame, noise, dropout): a pure
    function of (seed, stage, step, rank), which is what makes resume == uninterrupted; each data-parallel rank
    draws its own share of the global batch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stage_index * 100_003 + step * 1009 + rank) % (2**63))


class CaptionBank:
    """Text embeddings of every caption of the stage (computed once, cached on disk) and of the empty prompt."""

    def __init__(self, encoder, captions: list[str], cache: Path):
        from pyramid_repro.models import encode_cached

        uniq = sorted(set(captions))
        self.row = {c: i for i, c in enumerate(uniq)}
        tokens, mask, pooled = encode_cached(encoder, uniq + [""], cache)
        self.text = TextCondition(tokens, mask.bool(), pooled)
        self.empty_row = len(uniq)

    def batch(self, captions: list[str], drop: torch.Tensor | None = None) -> TextCondition:
        rows = torch.tensor([self.row[c] for c in captions])
        if drop is not None:  # caption dropout for classifier-free guidance (Sec. 3.1)
            rows = torch.where(drop, torch.full_like(rows, self.empty_row), rows)
        return self.text.index(rows)

    def empty(self) -> TextCondition:
        return self.text.index([self.empty_row])


def load_dit_for_sampling(folder: Path, cfg: Config):
    """(model in eval mode, text encoder) from a final/ folder written by this trainer."""
    from pyramid_repro.models import PyramidDiT, build_text_encoder

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a DiT checkpoint folder (no config.json); train the experiment "
                                "first (snakemake ... train_dit) or pass --checkpoint <folder with config.json>")
    model = PyramidDiT.from_pretrained(folder).eval()
    return model, build_text_encoder(cfg)


def _fid_point(model, cfg: Config, bank: CaptionBank, val_captions: list[str], vae, latent_size, n: int,
               seed: int) -> float:
    """Probe FID of `n` generated first frames (images) against real frames (PAPER.md section 7: FID
    convergence of the spatial pyramid vs full-sequence flow matching)."""
    from pyramid_repro.eval.backends import fid_probe_score
    from pyramid_repro.vae import decode_latents

    g = torch.Generator().manual_seed(seed)
    caps = [val_captions[i % len(val_captions)] for i in range(n)]
    frames = []
    for b in range(0, n, 32):
        text = bank.batch(caps[b: b + 32])
        lat = generate_latents(model, cfg, text, bank.empty(), 1, latent_size, g)
        frames.append(decode_latents(vae, lat))
    return float(fid_probe_score(torch.cat(frames), cfg))


# what a DiT stage's training depends on (checkpoint fingerprint); eval/compute/report settings do not count
DIT_SECTIONS = ("seed", "data", "vae", "pyramid", "model", "text_encoder", "train")


def sample_token_distribution(cfg: Config, stage: CurriculumStage) -> list[tuple[float, int]]:
    """(probability, video tokens) of the training samples of `stage` as make_batch draws them: pyramid stage
    k ~ pyramid.stage_weights and learnt latent frame j ~ U{0..T-1} with its compressed history (uncompressed
    without the temporal pyramid); the full-sequence baseline runs all T frames at full resolution."""
    p, m, v = cfg.pyramid, cfg.model, cfg.vae
    h, w = stage.height // v.spatial_compression, stage.width // v.spatial_compression
    T = cost.latent_frames(stage.frames, v.temporal_compression)
    if p.stages == 1:
        return [(1.0, cost.fullseq_training_tokens(h, w, m.patch_size, T))]
    weights = p.stage_weights or [1.0] * p.stages
    return [(wk / sum(weights) / T,
             cost.pyramid_sample_tokens(h, w, m.patch_size, j + 1, p.stages, k, p.temporal_pyramid))
            for k, wk in enumerate(weights) for j in range(T)]


def expected_sample_tokens(cfg: Config, stage: CurriculumStage) -> float:
    """Expected tokens (video + text) of one training sample of `stage` (see sample_token_distribution)."""
    return sum(pr * t for pr, t in sample_token_distribution(cfg, stage)) + cfg.text_encoder.max_tokens


def expected_sample_flops(cfg: Config, stage: CurriculumStage) -> float:
    """Expected training FLOPs (forward + backward, text tokens included) of one sample of `stage`, over
    sample_token_distribution. Attention is quadratic in the tokens, so this averages FLOPs, not tokens."""
    m = cfg.model
    return sum(pr * cost.training_flops(t + cfg.text_encoder.max_tokens, m.depth, m.hidden_size, m.mlp_ratio)
               for pr, t in sample_token_distribution(cfg, stage))


def stage_steps(cfg: Config, experiment: str, stage: CurriculumStage) -> int:
    """Optimizer steps of `experiment`'s run of `stage`: the profile's, or with train.match_compute_to as many as
    spend the reference experiment's expected FLOPs of that stage (its steps x batch x FLOPs per sample), so
    the full-sequence baseline and the uncompressed-history ablation are compared at equal compute."""
    ref = cfg.train.match_compute_to
    if ref is None or ref == experiment:
        return stage.steps
    ref_cfg = cfg.for_experiment(ref)
    ref_stage = next(s for s in ref_cfg.train.curriculum if s.name == stage.name)
    budget = ref_stage.steps * ref_stage.batch_size * expected_sample_flops(ref_cfg, ref_stage)
    return max(1, round(budget / (stage.batch_size * expected_sample_flops(cfg, stage))))


def stage_fingerprint(cfg: Config, stage: CurriculumStage) -> str:
    """Hash of the settings a stage's training reads (an image stage ignores IMAGE_STAGE_UNUSED), so the
    experiments that share an image stage agree on its checkpoints."""
    return cfg.config_hash(DIT_SECTIONS, IMAGE_STAGE_UNUSED if stage.kind == "image" else ())


def train_stage(cfg: Config, experiment: str, stage_name: str, out: Path | None = None,
                max_steps: int | None = None) -> Path:
    """Train one curriculum stage; returns the stage folder (with done.json when finished)."""
    from pyramid_repro.models import build_dit, build_text_encoder
    from pyramid_repro.train.checkpoint import latest_checkpoint, load_checkpoint, resume_point, save_checkpoint
    from pyramid_repro.train.ledger import LedgerRecorder
    from pyramid_repro.train.runtime import check_finite, make_accelerator
    from pyramid_repro.vae import LatentDataset

    res = Path(cfg.results) / cfg.profile
    idx, st = _stage(cfg, stage_name)
    owner = stage_owner(experiment, st.kind, cfg.train.share_image_stage)
    if owner != experiment:
        print(f"{experiment}/{stage_name} is the same computation as {owner}/{stage_name} "
              "(train.share_image_stage): training it there")
        experiment, cfg = owner, cfg.for_experiment(owner)  # so its config and provenance are the owner's
    out = out or stage_dir(res, experiment, stage_name)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    accelerator = make_accelerator(tc.precision)  # accumulation is done by hand below (stage-homogeneous batches)
    dev = accelerator.device

    data = LatentDataset(res / "latents", stage_name, "train")
    latents = torch.stack([data[i]["latent"] for i in range(len(data))])  # (N, C, T, h, w), normalised
    captions = [data[i]["caption"] for i in range(len(data))]
    val_caps = captions
    try:
        val = LatentDataset(res / "latents", stage_name, "val")
        val_caps = [val[i]["caption"] for i in range(len(val))] or captions
    except FileNotFoundError:
        pass
    encoder = build_text_encoder(cfg)
    bank = CaptionBank(encoder, captions + val_caps, res / "text_cache" / f"{stage_name}.safetensors")

    torch.manual_seed(cfg.seed)
    model = build_dit(cfg, encoder.token_dim, encoder.pooled_dim)
    if idx > 0:  # the curriculum: start from the previous stage's final weights
        prev = owned_stage_dir(cfg, experiment, cfg.train.curriculum[idx - 1]) / "final"
        if not (prev / "config.json").exists():
            raise FileNotFoundError(f"stage {stage_name!r} starts from {prev}, which does not exist: train stage "
                                    f"{cfg.train.curriculum[idx - 1].name!r} first")
        model.load_state_dict(type(model).from_pretrained(prev).state_dict())
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999))
    sched_lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, tc.warmup_steps)))
    model, opt = accelerator.prepare(model, opt)

    schedule = PyramidSchedule.from_config(cfg.pyramid)
    micro = st.micro_batch_size or st.batch_size
    # global batch = micro-batch x accumulation steps x data-parallel processes (Table 4's batch sizes are global)
    accum = max(1, st.batch_size // (micro * accelerator.num_processes))
    main_process = accelerator.is_main_process
    steps = stage_steps(cfg, experiment, st)
    stop = steps if max_steps is None else min(steps, max_steps)  # an early stop leaves a checkpoint to resume
    latent_size = tuple(latents.shape[-2:])
    text_tokens = cfg.text_encoder.max_tokens
    step0, trace, stats = 0, [], {"samples": 0, "tokens": 0, "flops": 0.0}
    if accelerator.is_main_process:  # one process moves stale checkpoints aside and stamps the folder
        resume_point(out / "checkpoints", stage_fingerprint(cfg, st))
    accelerator.wait_for_everyone()
    ck = latest_checkpoint(out / "checkpoints")
    if ck is not None:
        state = load_checkpoint(ck, model=accelerator.unwrap_model(model), optimizer=opt)
        step0, trace = state["step"], state["extra"]["trace"]
        stats = state["extra"]["stats"]
        ema = state["extra"]["ema"]
        sched_lr.load_state_dict(state["extra"]["lr"])
        print(f"resuming {experiment}/{stage_name} from step {step0} ({ck})")
    job0 = dict(stats)  # this job's share of the work goes to its ledger row
    prev_steps = sum(stage_steps(cfg, experiment, s) for s in cfg.train.curriculum[:idx])
    prev_stats = _previous_stats(cfg, experiment, idx)
    fid_path = out / "fid.csv"
    if step0 == 0 and fid_path.exists():
        fid_path.unlink()

    with LedgerRecorder(out / "ledger.csv", cfg, enabled=accelerator.is_main_process, experiment=experiment,
                        stage=stage_name, resumed_from_step=step0) as ledger:
        t_start = time.time()
        bar = tqdm(range(step0, stop), initial=step0, total=steps, desc=f"{experiment}/{stage_name}")
        for step in bar:
            g = step_generator(cfg.seed, idx, step, accelerator.process_index)
            model.train()
            loss_sum = 0.0
            for _ in range(accum):
                rows = torch.randint(0, len(latents), (micro,), generator=g)
                b = make_batch(latents[rows], schedule, cfg.pyramid, g)
                drop = torch.rand(micro, generator=g) < cfg.text_encoder.caption_dropout
                text = bank.batch([captions[int(r)] for r in rows], drop)
                with accelerator.autocast():
                    v = model(history=[h.to(dev) for h in b.history], current=b.current.to(dev),
                              timestep=b.timestep.to(dev), tokens=text.tokens.to(dev),
                              text_mask=text.mask.to(dev), pooled=text.pooled.to(dev), full_size=latent_size)
                    loss = F.mse_loss(v.float(), b.target.to(dev).float())
                check_finite(loss, step, out / "checkpoints")
                accelerator.backward(loss / accum)
                loss_sum += float(loss) / accum
                video_tokens = b.video_tokens(cfg.model.patch_size)
                toks = video_tokens + micro * text_tokens
                stats["samples"] += micro
                stats["tokens"] += video_tokens
                stats["flops"] += cost.training_flops(toks / micro, cfg.model.depth, cfg.model.hidden_size,
                                                      cfg.model.mlp_ratio) * micro
            if tc.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            sched_lr.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():  # EMA of the weights used for sampling
                for k, p in accelerator.unwrap_model(model).state_dict().items():
                    ema[k].mul_(tc.ema_decay).add_(p.detach().float().to(ema[k].dtype), alpha=1 - tc.ema_decay)
            trace.append(loss_sum)
            bar.set_postfix(loss=f"{loss_sum:.4f}")
            done = step + 1
            if main_process and tc.fid_every and (done % tc.fid_every == 0 or done == steps):
                _record_fid(fid_path, cfg, accelerator.unwrap_model(model), ema, bank, val_caps, res,
                            latent_size, prev_steps + done, prev_stats, stats, time.time() - t_start, stage_name)
            if main_process and (done % tc.ckpt_every == 0 or done == stop):
                save_checkpoint(out / "checkpoints", step=done, model=accelerator.unwrap_model(model),
                                optimizer=opt, extra={"trace": trace, "stats": stats, "ema": ema,
                                                      "lr": sched_lr.state_dict()})
        n = accelerator.num_processes  # every rank did the same amount of work
        ledger.update(steps=stop - step0, samples=n * (stats["samples"] - job0["samples"]),
                      tokens=n * (stats["tokens"] - job0["tokens"]), flops=n * (stats["flops"] - job0["flops"]))
    accelerator.wait_for_everyone()
    if not main_process:
        return out
    _write_log(out / "train_log.csv", trace)
    if stop < steps:
        return out

    final = accelerator.unwrap_model(model)
    final.load_state_dict(ema)
    final.save_pretrained(out / "final")
    save_config(cfg, out / "final" / "train_config.yaml")
    write_json(out / "done.json", {"experiment": experiment, "stage": stage_name, "steps": steps,
                                   "first_loss_mean10": sum(trace[:10]) / max(1, len(trace[:10])),
                                   "last_loss_mean10": sum(trace[-10:]) / max(1, len(trace[-10:])),
                                   "samples": stats["samples"], "tokens": stats["tokens"], "flops": stats["flops"],
                                   "provenance": provenance(cfg, experiment=experiment)})
    return out


def _previous_stats(cfg: Config, experiment: str, idx: int) -> dict:
    """Cumulative samples/tokens/FLOPs of the earlier curriculum stages (for compute-axis FID curves)."""
    acc = {"samples": 0, "tokens": 0, "flops": 0.0, "device_hours": 0.0}
    for s in cfg.train.curriculum[:idx]:
        folder = owned_stage_dir(cfg, experiment, s)
        f = folder / "done.json"
        if f.exists():
            d = json.loads(f.read_text())
            for k in ("samples", "tokens", "flops"):
                acc[k] += d.get(k) or 0
        fid = folder / "fid.csv"
        if fid.exists():
            rows = list(csv.DictReader(fid.open()))
            if rows:
                acc["device_hours"] = float(rows[-1]["device_hours"])
    return acc


def _record_fid(path: Path, cfg: Config, model, ema: dict, bank: CaptionBank, val_caps: list[str], res: Path,
                latent_size, step: int, prev: dict, stats: dict, seconds: float, stage: str) -> None:
    from pyramid_repro.vae import load_vae

    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema)
    model.eval()
    try:
        fid = _fid_point(model, cfg, bank, val_caps, load_vae(res / "vae" / "final"), latent_size,
                         cfg.train.fid_samples, cfg.seed)
    finally:
        model.load_state_dict(live)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(FID_COLUMNS)
        w.writerow([step, prev["samples"] + stats["samples"], prev["tokens"] + stats["tokens"],
                    prev["flops"] + stats["flops"], prev["device_hours"] + seconds / 3600.0, f"{fid:.4f}",
                    "fid-probe", stage])


def _write_log(path: Path, trace: list[float]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss"])
        for i, v in enumerate(trace, 1):
            w.writerow([i, f"{v:.6f}"])


def collect_fid_curve(cfg: Config, experiment: str, out: Path) -> Path:
    """Concatenate the stages' fid.csv files into one curve (results/<profile>/<experiment>/fid_curve.csv)."""
    rows = []
    for s in cfg.train.curriculum:
        f = owned_stage_dir(cfg, experiment, s) / "fid.csv"
        if f.exists():
            rows += list(csv.DictReader(f.open()))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FID_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pyramid-repro train-dit",
        description="Train one curriculum stage of one experiment (resumes from its newest checkpoint), or "
        "collect an experiment's FID-vs-compute curve across stages (--collect-fid-curve).",
    )
    add_config_args(ap)
    ap.add_argument("--stage", help="curriculum stage name (train.curriculum[].name)")
    add_threads_arg(ap)
    ap.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (tests, debugging)")
    ap.add_argument("--collect-fid-curve", action="store_true", help="write the experiment's fid_curve.csv")
    ap.add_argument("--out", type=Path, help="stage folder (default results/<profile>/<experiment>/dit/<stage>) "
                    "or, with --collect-fid-curve, the CSV to write")
    args = ap.parse_args(argv)
    cfg = config_from_args(args, require_experiment=True)
    if args.collect_fid_curve:
        res = Path(cfg.results) / cfg.profile
        print(f"wrote {collect_fid_curve(cfg, args.experiment, args.out or res / args.experiment / 'fid_curve.csv')}")
        return 0
    if not args.stage:
        ap.error("--stage is required")
    out = train_stage(cfg, args.experiment, args.stage, args.out, args.max_steps)
    print(f"finished {args.experiment}/{args.stage}: {out}")
    return 0
