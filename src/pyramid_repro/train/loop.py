"""The training scaffold shared by the VAE and DiT trainers.

Both trainers are the same loop around a different loss: accelerate for the device, mixed precision and data
parallelism; one optimizer step = a fixed number of micro-batches shared out among the processes; an EMA of the
weights; a NaN/inf guard; atomic checkpoints with resume; a loss log. What is common lives here:

* :class:`TrainingJob` — the accelerator, this process's share of each step's micro-batches, the sum across
  processes of a step's loss and counts, resume from the newest checkpoint of this configuration, saving
  (main process only).
* :func:`micro_batch_generator` — the randomness of one micro-batch as a pure function of (seed, stage, step,
  micro-batch index), on the job's device. It does not depend on the process count, so N processes that each take
  their share of the micro-batches compute the same global batch as one process (the data-parallel tests compare
  the loss traces), and a resumed run draws what an uninterrupted one would have drawn.
* :class:`EMA` — exponential moving average of the weights (the weights used for sampling), on the model's device.
* :func:`lr_lambda` / :func:`lr_scheduler` — the learning-rate schedule of both trainers: linear warm-up, then
  constant (DiT) or a cosine decay (VAE).
* :class:`TrainLoop` — the loop itself around a trainer's optimizer step: resume, the ledger row, the progress bar,
  NaN/inf guard, clipping, optimizer/lr/EMA steps, checkpoints, the loss log, the live curves (train/curves.py) and
  the final (EMA) weights. The DiT trainer (train/dit.py) and the VAE trainer (train/vae.py) subclass it and fill
  in their micro-batches.

Data parallel: gradients are averaged by DDP across processes, each process divides its loss by its number of
micro-batches, so the update is the mean over the global batch whatever the process count. With an explicit
micro_batch_size the micro-batches (and so the loss trace) are the same for any process count; with 0 each process
takes one micro-batch of batch_size / processes samples. Only the main process
writes checkpoints, logs, ledger rows and FID points; counts in the ledger are summed across processes once.

Sharded data parallel (`compute.sharding`, the DiT trainer; train/sharding.py): instead of DDP the model is
sharded with FSDP2 over the processes, the optimizer and the EMA hold only this process's shards, and gradients are
reduce-scattered after every micro-batch. Checkpoints still hold full state dicts (gathered to the main process),
so a job resumes on any number of processes, sharded or not, and final/ is still one save_pretrained folder.
"""

from __future__ import annotations

import contextlib
import csv
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from pyramid_repro.config import Config, ConfigError, save_config
from pyramid_repro.device import generator as device_generator
from pyramid_repro.layout import Layout
from pyramid_repro.train.checkpoint import latest_checkpoint, load_checkpoint, resume_point, save_checkpoint
from pyramid_repro.train.curves import Curves
from pyramid_repro.train.ledger import LedgerRecorder
from pyramid_repro.train.sharding import (full_model_state, full_optimizer_state, full_tensors, is_sharded,
                                          load_model_state, load_optimizer_state, local, plain_copy, remap_optimizer,
                                          shard_like, shard_model)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept untouched."""


def make_accelerator(device: torch.device | str = "cpu", precision: str = "fp32", unused_parameters: bool = False):
    """An accelerate Accelerator on `device` (pyramid_repro.device.resolve_device): one process by default, DDP
    under `accelerate launch` / `torchrun`. bf16 autocast only on CUDA (CPU runs stay fp32, bit-reproducible).
    `unused_parameters`: the model has parameters that get no gradient (the MM-DiT's last text-stream output
    feeds nothing), which DDP must be told about."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    device = torch.device(device)
    mixed = "bf16" if precision == "bf16" and device.type == "cuda" else "no"
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if unused_parameters else []
    return Accelerator(mixed_precision=mixed, cpu=device.type == "cpu", kwargs_handlers=handlers)


def adamw(params, device: torch.device | str, **kwargs) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where the device has one (CPU and CUDA): one call per step instead of a
    dozen small ops per parameter tensor (the optimizer was 13% of a tiny CPU training step). Other devices
    (`meta` in the device tests) get the reference implementation; both compute the same update."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def lr_lambda(warmup_steps: int, decay_steps: int | None = None) -> Callable[[int], float]:
    """Learning-rate factor of optimizer step s (0-based) for torch's LambdaLR: a linear warm-up over
    `warmup_steps` steps, then constant (the DiT stages), or with `decay_steps` that times a cosine decay towards 0
    over `decay_steps` steps (the VAE: the tiny profile's short schedule needs its last steps at a small lr).
    Plain functions, so LambdaLR's state_dict (in every checkpoint) stores no state for them."""

    def warmup(s: int) -> float:
        return min(1.0, (s + 1) / max(1, warmup_steps))

    if decay_steps is None:
        return warmup
    return lambda s: warmup(s) * 0.5 * (1 + torch.cos(torch.tensor(3.14159 * s / decay_steps)).item())


def lr_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int,
                 decay_steps: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """The trainers' learning-rate schedule (lr_lambda) on `optimizer` (before accelerate prepares it)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup_steps, decay_steps))


def check_finite(loss: float | torch.Tensor, step: int, checkpoints: Path | None = None) -> None:
    """Stop with a clear error on a NaN/inf loss, before it reaches the weights or a checkpoint."""
    value = float(loss)
    if value != value or value in (float("inf"), float("-inf")):
        where = f"; the last good checkpoint in {checkpoints} is kept, rerun resumes from it" if checkpoints else ""
        raise NonFiniteLossError(f"non-finite loss ({value}) at step {step + 1}{where}. Lower the learning "
                                 "rate or check the inputs.")


def micro_batch_generator(step_key: int, micro_batch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Generator of micro-batch `micro_batch` of the optimizer step identified by `step_key` (the trainer's pure
    function of seed, stage and step): independent of the process that draws it. Micro-batch 0 is seeded with
    `step_key` itself."""
    return device_generator((step_key + micro_batch * 7_919_000_011) % (2**63), device)


class EMA:
    """Exponential moving average of a model's state dict (kept on the model's device, in its dtypes). Of a sharded
    model (train/sharding.py) it is sharded like the weights: each process averages its own shards."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """shadow <- decay * shadow + (1 - decay) * weights, for all tensors in two multi-tensor calls (one call
        per tensor and op was a tenth of a tiny CPU training step)."""
        state = model.state_dict()
        shadow = [local(v) for v in self.shadow.values()]
        current = [local(state[k].detach().to(v.dtype)) for k, v in self.shadow.items()]
        torch._foreach_mul_(shadow, self.decay)
        torch._foreach_add_(shadow, current, alpha=1 - self.decay)

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from a checkpoint's copy (full tensors on the CPU) onto the shadow's device (this process's
        shards when sharded)."""
        self.shadow = {k: shard_like(v, self.shadow[k]) for k, v in state.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights: the shadow itself, or when sharded its full tensors gathered to the main process's
        CPU ({} on the others; then every process must call it)."""
        if not any(is_sharded(v) for v in self.shadow.values()):
            return self.shadow
        main = torch.distributed.get_rank() == 0
        full = full_tensors(self.shadow, main)
        return full if main else {}


class _FullState:
    """A sharded model or optimizer as train/checkpoint.py sees it: `state_dict()` gives the full state gathered
    beforehand, `load_state_dict(full)` shards a full state into it."""

    def __init__(self, state: dict | None = None, load: Callable[[dict], None] | None = None):
        self._state, self._load = state, load

    def state_dict(self) -> dict:
        return self._state

    def load_state_dict(self, full: dict) -> None:
        self._load(full)


class TrainingJob:
    """One training job's accelerator, process share and checkpoints (see the module docstring)."""

    def __init__(self, device: torch.device | str, precision: str, checkpoints: Path, fingerprint: str,
                 unused_parameters: bool = False, sharding: str = "none"):
        self.accelerator = make_accelerator(device, precision, unused_parameters)
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        self.checkpoints, self.fingerprint = Path(checkpoints), fingerprint
        # compute.sharding (train/sharding.py); one process has nothing to shard over
        self.sharding = sharding if self.world > 1 else "none"
        if sharding != "none" and self.world == 1:
            print(f"compute.sharding={sharding}: one process holds all the state; training unsharded")

    @property
    def sharded(self) -> bool:
        """Whether the models are sharded over the processes (FSDP2) rather than replicated (DDP)."""
        return self.sharding != "none"

    # -- data parallel -----------------------------------------------------------------------------------------
    def micro_batch_size(self, batch_size: int, micro_batch_size: int, where: str) -> int:
        """Samples per micro-batch: `micro_batch_size`, or with 0 the global batch split evenly among the
        processes (one micro-batch per process and step)."""
        if micro_batch_size:
            return micro_batch_size
        if batch_size % self.world:
            raise ConfigError(f"{where}: batch_size {batch_size} cannot be split among {self.world} processes; "
                              "make it a multiple of the process count or set micro_batch_size")
        return batch_size // self.world

    def my_micro_batches(self, per_step: int, where: str) -> range:
        """Global indices of the micro-batches this process computes in each step (a contiguous share)."""
        if per_step % self.world:
            raise ConfigError(f"{where}: {per_step} micro-batch(es) per optimizer step cannot be shared among "
                              f"{self.world} processes; make batch_size / micro_batch_size a multiple of the "
                              "process count")
        n = per_step // self.world
        return range(self.rank * n, (self.rank + 1) * n)

    def prepare(self, models: dict[str, torch.nn.Module],
                optimizers: dict[str, Any]) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
        """The models and optimizers wrapped by accelerate (device placement, DDP), in one prepare call, under the
        same names. Sharded: the models are sharded in place (train/sharding.py) and the optimizers pointed at
        their sharded parameters, then only the optimizers go through accelerate."""
        if self.sharded:
            for model in models.values():
                before = dict(model.named_parameters())
                shard_model(model, self.world, self.device, self.sharding, self.accelerator.mixed_precision == "bf16")
                for opt in optimizers.values():
                    remap_optimizer(opt, before, dict(model.named_parameters()))
            prepared = self.accelerator.prepare(*optimizers.values())
            prepared = (prepared,) if len(optimizers) == 1 else prepared
            return dict(models), dict(zip(optimizers, prepared))
        prepared = self.accelerator.prepare(*models.values(), *optimizers.values())
        if len(models) + len(optimizers) == 1:
            prepared = (prepared,)
        return dict(zip(models, prepared[:len(models)])), dict(zip(optimizers, prepared[len(models):]))

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """No gradient all-reduce on the micro-batches before the last one of a step (DDP no_sync). Sharded, every
        micro-batch's gradients are reduce-scattered (accumulating them unsharded would cost ZeRO-2's saving)."""
        return contextlib.nullcontext() if last or self.sharded else self.accelerator.no_sync(model)

    def sum_over_processes(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over every process (unchanged with one process)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    def full_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's full state dict: gathered to the main process's CPU when sharded (every process calls it;
        {} on the others), else the unwrapped model's own."""
        return full_model_state(model, self.main) if self.sharded else self.unwrap(model).state_dict()

    def with_weights(self, model: torch.nn.Module, weights: dict[str, torch.Tensor] | None) -> torch.nn.Module:
        """Main process: an unsharded module holding `weights` (None: the model's own, unsharded only) for
        save_pretrained: the unwrapped model itself with them loaded, or when sharded a plain copy."""
        if self.sharded:
            return plain_copy(model, weights)
        final = self.unwrap(model)
        if weights is not None:
            final.load_state_dict(weights)
        return final

    @contextlib.contextmanager
    def holding(self, model: torch.nn.Module, weights: dict[str, torch.Tensor]):
        """Main process: `with_weights` for a moment; the live model gets its own weights back afterwards."""
        if self.sharded:
            yield plain_copy(model, weights)
            return
        live = {k: v.detach().clone() for k, v in self.unwrap(model).state_dict().items()}
        try:
            yield self.with_weights(model, weights)
        finally:
            self.unwrap(model).load_state_dict(live)

    # -- checkpoints -------------------------------------------------------------------------------------------
    def resume(self, models: dict[str, torch.nn.Module], optimizers: dict[str, Any]) -> dict | None:
        """Load the newest checkpoint written under this job's fingerprint into `models`/`optimizers` (every
        process); returns {"step", "extra"} or None to start fresh. The main process first moves checkpoints of
        another configuration aside (train/checkpoint.py `resume_point`)."""
        if self.main:
            resume_point(self.checkpoints, self.fingerprint)
        self.accelerator.wait_for_everyone()
        ck = latest_checkpoint(self.checkpoints)
        if ck is None:
            return None
        if self.sharded:  # the checkpoint's full states, each process keeping its shards
            models = {k: _FullState(load=lambda full, m=m: load_model_state(m, full)) for k, m in models.items()}
            optimizers = {k: _FullState(load=lambda full, o=o: load_optimizer_state(o, full))
                          for k, o in optimizers.items()}
        state = load_checkpoint(ck, models, optimizers, mmap=self.sharded)
        state["path"] = ck
        return state

    def save(self, step: int, models: dict[str, torch.nn.Module], optimizers: dict[str, Any],
             extra: dict[str, Any]) -> None:
        """Checkpoint (main process only; models unwrapped, tensors on the CPU). Sharded, every process calls it:
        the full model and optimizer states are gathered to the main process first (the same file as unsharded)."""
        if self.sharded:
            models = {k: _FullState(full_model_state(m, self.main)) for k, m in models.items()}
            optimizers = {k: _FullState(full_optimizer_state(o, self.main)) for k, o in optimizers.items()}
        else:
            models = {k: self.unwrap(m) for k, m in models.items()}
        if self.main:
            save_checkpoint(self.checkpoints, step, models, optimizers, extra=_to_cpu(extra))


class TrainLoop:
    """The optimizer-step loop of one training job, shared by the DiT stages (train/dit.py) and the VAE
    (train/vae.py): resume from the newest checkpoint of the job's fingerprint, one ledger row for the job, the
    progress bar; after each step the NaN/inf guard, gradient clipping, the optimizer, lr-schedule and EMA steps;
    checkpoints every `ckpt_every` steps and at the stop (`max_steps` stops early and leaves a checkpoint to resume
    from); then (main process) the loss log and, at the end of the schedule, the (EMA) weights in final/ with the
    config they were trained with.

    `models` and `optimizers` are accelerate-prepared (TrainingJob.prepare), the first of each being the one the
    loop steps (the VAE's discriminator and its optimizer ride along in checkpoints). A trainer subclasses this and
    fills in `step` (this process's micro-batches of one optimizer step, backward included) and, where it needs
    them, the hooks below; the checkpoint's extra state is {"trace", **extra_state(), "ema", "lr"}."""

    def __init__(self, job: TrainingJob, cfg: Config, out: Path, models: dict[str, torch.nn.Module],
                 optimizers: dict[str, Any], lr: torch.optim.lr_scheduler.LRScheduler, ema: EMA | None, *,
                 steps: int, max_steps: int | None, grad_clip: float, log_every: int, ckpt_every: int,
                 experiment: str, stage: str, label: str, desc: str):
        self.job, self.cfg, self.out = job, cfg, Path(out)
        self.models, self.optimizers, self.lr, self.ema = models, optimizers, lr, ema
        self.model, self.optimizer = next(iter(models.values())), next(iter(optimizers.values()))
        self.steps = steps
        self.stop = steps if max_steps is None else min(steps, max_steps)  # an early stop leaves a checkpoint
        self.grad_clip, self.log_every, self.ckpt_every = grad_clip, log_every, ckpt_every
        self.experiment, self.stage = experiment, stage  # of the ledger row
        self.label, self.desc = label, desc  # the resume message's name of the job; the progress bar's
        self.step0, self.trace = 0, []
        self.t_start = 0.0

    # -- what a trainer fills in -------------------------------------------------------------------------------
    def step(self, step: int) -> float:
        """Forward and backward of this process's micro-batches of optimizer step `step` (0-based); returns the
        step's loss, the mean over the global batch (the same on every process)."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """The trainer's own state in a checkpoint (beside the trace, EMA and lr schedule)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what extra_state saved, from a checkpoint's extra dict."""

    def started(self) -> None:
        """After resume (self.step0 set), before the ledger starts timing."""

    def trace_entry(self, step: int, loss: float) -> Any:
        """What the trace keeps of optimizer step `step` (0-based): the loss by default."""
        return loss

    def trace_rows(self) -> list[dict[str, Any]]:
        """The loss log's rows (write_trace) from the trace."""
        return self.trace

    def postfix(self, done: int, loss: float) -> dict[str, str] | None:
        """The progress bar's postfix after `done` steps, or None to leave it."""
        return None

    def stepped(self, done: int) -> None:
        """After optimizer step `done` (1-based) and the EMA update, before its checkpoint."""

    def work(self) -> dict[str, Any]:
        """This job's samples, tokens and FLOPs for its ledger row (every process calls it)."""
        return {}

    def counts(self) -> dict[str, float]:
        """Samples, tokens and FLOPs spent so far, over every process, without a collective (the live curves'
        throughput and MFU take the difference between steps); {} when the trainer does not count them."""
        return {}

    def finish(self, final: torch.nn.Module) -> None:
        """Main process, end of the schedule: after final/ holds `final` (the unwrapped model with the EMA
        weights, in eval mode) and its train_config.yaml."""

    def final_weights(self) -> dict[str, torch.Tensor] | None:
        """What final/ holds: the EMA weights, or the model's own (None: unsharded, the model holds them). Every
        process calls it (sharded, the weights are gathered to the main process)."""
        if self.ema is not None:
            return self.ema.state_dict()
        return self.job.full_state(self.model) if self.job.sharded else None

    # -- the loop ----------------------------------------------------------------------------------------------
    def resume(self) -> None:
        job = self.job
        state = job.resume({k: job.unwrap(m) for k, m in self.models.items()}, self.optimizers)
        if state is None:
            return
        extra = state["extra"]
        self.step0, self.trace = state["step"], extra["trace"]
        self.load_extra_state(extra)
        if self.ema is not None and extra.get("ema") is not None:
            self.ema.load(extra["ema"])
        self.lr.load_state_dict(extra["lr"])
        print(f"resuming {self.label} from step {self.step0} ({state['path']})")

    def run(self) -> None:
        """Resume, train to the stop, write the outputs (see the class docstring)."""
        job = self.job
        self.resume()
        self.started()
        with LedgerRecorder(self.out / "ledger.csv", self.cfg, experiment=self.experiment, stage=self.stage,
                            resumed_from_step=self.step0, enabled=job.main, processes=job.world,
                            device=job.device) as ledger:
            self.t_start = time.time()
            curves = Curves(job, Layout.curves(self.out), self.step0, self.counts())
            bar = tqdm(range(self.step0, self.stop), initial=self.step0, total=self.steps, desc=self.desc,
                       disable=not job.main)
            for step in bar:
                t0 = time.perf_counter()
                self.model.train()
                loss = self.step(step)
                check_finite(loss, step, self.out / "checkpoints")
                lr = self.lr.get_last_lr()[0]  # the rate of this step's update
                if self.grad_clip:
                    norm = job.accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                else:
                    norm = curves.grad_norm(self.model.parameters())  # for the curve only: gradients untouched
                self.optimizer.step()
                self.lr.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(job.unwrap(self.model))
                self.trace.append(self.trace_entry(step, loss))
                done = step + 1
                curves.record(done, loss, lr, norm, time.perf_counter() - t0, self.counts(), self.trace[-1])
                postfix = self.postfix(done, loss)
                if postfix:
                    bar.set_postfix(**postfix)
                self.stepped(done)
                if done % self.ckpt_every == 0 or done == self.stop:
                    curves.flush()  # the curves up to a checkpoint are on disk before it is
                    job.save(done, self.models, self.optimizers,
                             {"trace": self.trace, **self.extra_state(),
                              "ema": self.ema.state_dict() if self.ema is not None else None,
                              "lr": self.lr.state_dict()})
            curves.close()
            ledger.update(steps=self.stop - self.step0, **self.work())
        weights = self.final_weights() if self.stop >= self.steps else None  # every process (sharded: a gather)
        job.accelerator.wait_for_everyone()
        if not job.main:
            return
        write_trace(self.out / "train_log.csv", self.trace_rows())
        if self.stop < self.steps:
            return
        final = job.with_weights(self.model, weights)
        final.eval()
        final.save_pretrained(self.out / "final")
        save_config(self.cfg, self.out / "final" / "train_config.yaml")
        self.finish(final)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def write_trace(path: Path, rows: list[dict[str, Any]]) -> None:
    """The loss log: one CSV row per optimizer step, `step` and `loss` first, then any loss parts."""
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k != "loss", k))
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
