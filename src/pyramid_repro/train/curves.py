"""Live training curves: one TensorBoard scalar per optimizer step of a training job (train/loop.py TrainLoop),
through accelerate's TensorBoard tracker (the authors' choice: their trainer's `--report_to tensorboard`).

Per optimizer step, under the job's folder (`Layout.curves`: results/<profile>/<experiment>/dit/<stage>/tensorboard/
and results/<profile>/vae/tensorboard/), at the step of train_log.csv (the stage's optimizer step, 1-based, counted
over every job of the stage and every process):

* `loss`: the step's loss, the mean over the global batch (train_log.csv's, stored as float32 by TensorBoard), and
  a trace's loss parts as `loss_parts/<part>` (the VAE's mse, kl, ...);
* `lr`: the learning rate the step's update used;
* `grad_norm`: the global L2 norm of the gradients before clipping (what clip_grad_norm_ returns; with
  grad_clip 0 it is computed on its own and the gradients are left as they are);
* `samples_per_second`, `tokens_per_second` (where the trainer counts tokens): the global batch's work over the
  step's wall time (its micro-batches, backward, clipping, optimizer and EMA update; not checkpoints or FID
  snapshots);
* `mfu` on a GPU with a known peak (flow/cost.py PEAK_BF16_FLOPS): the step's analytic training FLOPs (the
  trainer's own accounting, flow/cost.py) over the wall time, the process count and the GPU's dense bf16 peak.

Only the main process writes. A fresh start (step 0) clears the folder; a resumed job continues the same curves:
its writer purges the steps from the first one it trains on (those a killed job logged after its last checkpoint),
so each step appears once. Logging reads values the loop has anyway: no random draws, nothing written back to the
model or its gradients, so a run's numbers are the same with or without it. Without the tensorboard package
training runs as before and one line says the curves are off.

Cheap on a busy CPU: accelerate's tracker flushes the event file at every `log`, which waits for the writer's
thread; on two loaded cores that cost 20-80 ms a step. Here a step's scalars are queued and the writer's thread
writes them on its own (at least every FLUSH_SECS); the loop waits for it only before a checkpoint (so the curve
up to a checkpoint is on disk before the checkpoint is) and at the end of the job.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from pyramid_repro.flow import cost

CURVES_OFF = "tensorboard is not installed: the live training curves are off (pip install tensorboard)"
FLUSH_SECS = 10  # how stale the curves on disk may be while a job runs


def tensorboard_available() -> bool:
    """Whether the TensorBoard writer accelerate's tracker uses (torch.utils.tensorboard) can be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _queued_tracker():
    """accelerate's TensorBoardTracker whose `log` queues the scalars without flushing (module docstring)."""
    from accelerate.tracking import TensorBoardTracker, on_main_process

    class QueuedTensorBoardTracker(TensorBoardTracker):
        @on_main_process
        def log(self, values: dict, step: int | None = None, **kwargs):
            for k, v in values.items():
                self.writer.add_scalar(k, v, global_step=step, **kwargs)

    return QueuedTensorBoardTracker


def total_grad_norm(parameters) -> torch.Tensor:
    """Global L2 norm of the parameters' gradients (what clip_grad_norm_ returns), reading them only. Sharded
    gradients (DTensors) are reduced over the processes, so every process must call it."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is None:  # torch < 2.6
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))
    else:
        norm = get_total_norm(grads)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


class Curves:
    """The curves of one training job (module docstring): made after resume, `record` after each optimizer step
    (every process: measuring the gradient norm of sharded weights is collective), `close` at the end."""

    def __init__(self, job, folder: Path, first_step: int, counts: dict[str, float]):
        self.job, self.folder = job, Path(folder)
        self.on = tensorboard_available()  # the same answer on every process (one environment)
        self.tracker = None
        self.counts = dict(counts)
        self.peak = None
        if job.device.type == "cuda":
            self.peak = cost.peak_bf16_flops(torch.cuda.get_device_name(job.device))
        if not job.main:
            return
        if not self.on:
            print(CURVES_OFF)
            return
        if first_step == 0:  # a fresh start: an earlier run's curves go
            shutil.rmtree(self.folder, ignore_errors=True)
        # a resumed job: steps from first_step + 1 on that an earlier job logged are purged (a kill after them)
        kwargs = {"purge_step": first_step + 1} if first_step > 0 else {}
        self.tracker = _queued_tracker()("", str(self.folder), max_queue=100_000, flush_secs=FLUSH_SECS, **kwargs)
        acc = job.accelerator
        acc.log_with = [*acc.log_with, self.tracker]
        acc.init_trackers(self.folder.parent.name)

    def grad_norm(self, parameters) -> torch.Tensor | None:
        """The gradient norm for the curve when the loop does not clip (None when the curves are off)."""
        return total_grad_norm(parameters) if self.on else None

    def record(self, step: int, loss: float, lr: float, grad_norm: torch.Tensor | None, seconds: float,
               counts: dict[str, float], entry: Any = None) -> None:
        """Log optimizer step `step` (1-based): its loss, the lr it used, the gradient norm before clipping, its
        wall time and the trainer's cumulative work `counts` (samples, tokens, flops: global, so the step's share
        is the difference to the previous call); `entry` is the trace's entry (a dict adds its loss parts)."""
        done = {k: v - self.counts.get(k, 0) for k, v in counts.items()}
        self.counts = dict(counts)
        if self.tracker is None:
            return
        values = {"loss": float(loss), "lr": float(lr)}
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        if isinstance(entry, dict):
            values.update({f"loss_parts/{k}": float(v) for k, v in entry.items()
                           if k not in ("step", "loss") and isinstance(v, (int, float))})
        if seconds > 0:
            if done.get("samples"):
                values["samples_per_second"] = done["samples"] / seconds
            if done.get("tokens"):
                values["tokens_per_second"] = done["tokens"] / seconds
            if done.get("flops") and self.peak:
                values["mfu"] = done["flops"] / (seconds * self.job.world * self.peak)
        self.job.accelerator.log(values, step=step)

    def flush(self) -> None:
        """Wait until every logged step is in the event file (before a checkpoint)."""
        if self.tracker is not None:
            self.tracker.writer.flush()

    def close(self) -> None:
        """Flush and close the event file. (Not accelerate's end_training: it would also end the process group,
        which the job still uses after the loop.)"""
        if self.tracker is not None:
            self.tracker.finish()
            acc = self.job.accelerator
            acc.trackers.remove(self.tracker)
            acc.log_with = [t for t in acc.log_with if t is not self.tracker]
            self.tracker = None
