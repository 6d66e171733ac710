"""Runtime setup shared by every training job: accelerate, precision, seeding, and the NaN/inf guard."""

from __future__ import annotations

from pathlib import Path

import torch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept untouched."""


def make_accelerator(precision: str = "fp32", gradient_accumulation_steps: int = 1):
    """An accelerate Accelerator: one CPU process by default; under `accelerate launch` DDP/FSDP across GPUs and
    nodes. bf16 only on GPU (CPU runs stay fp32 so resume is bit-reproducible)."""
    from accelerate import Accelerator

    mixed = "bf16" if precision == "bf16" and torch.cuda.is_available() else "no"
    return Accelerator(mixed_precision=mixed, gradient_accumulation_steps=gradient_accumulation_steps,
                       cpu=not torch.cuda.is_available())


def check_finite(loss: torch.Tensor, step: int, checkpoints: Path | None = None) -> None:
    """Stop with a clear error on a NaN/inf loss (before it reaches the weights or a checkpoint)."""
    if not torch.isfinite(loss).all():
        where = f"; the last good checkpoint in {checkpoints} is kept, rerun resumes from it" if checkpoints else ""
        raise NonFiniteLossError(f"non-finite loss ({float(loss)}) at step {step + 1}{where}. Lower the learning "
                                 "rate or check the inputs.")
