"""Where every tensor lives: the one place that resolves the compute device and builds what must live on it.

Every command asks :func:`resolve_device` (config ``compute.device``: ``auto`` = CUDA when a GPU is visible, else the
CPU) and puts its models, batches, tables and random generators there. Three rules keep a job correct on any
device, and the device tests (``tests/test_device.py``) check them with every tensor on PyTorch's ``meta`` device:

* tensors are created on the device of the tensors they meet (``device=x.device``), never on the default device;
* random draws use a generator made by :func:`generator` for the device of the tensor they fill (CUDA draws need a
  CUDA generator); control draws (which rows, stage, frame, caption dropout) are drawn on the generator's own
  device (``device=g.device``) and read back as host values;
* on the CPU the generator is a plain CPU generator, so CPU runs draw exactly the numbers they always drew.

Precision: :func:`autocast` gives bf16 autocast on CUDA when a profile says ``precision: bf16`` and plain fp32
everywhere else (CPU runs stay fp32, so a resumed run reproduces an uninterrupted one bit for bit).
"""

from __future__ import annotations

import contextlib
import os

import torch

from pyramid_repro.base import ConfigError
from pyramid_repro.tree import Config

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto") -> torch.device:
    """The device a command computes on: ``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda``.

    Under a multi-process launch (``accelerate launch`` / ``torchrun`` set ``LOCAL_RANK``) ``cuda`` is this
    process's GPU. ``meta`` is accepted for shape-only runs (the device tests)."""
    if choice not in (*DEVICE_CHOICES, "meta"):
        raise ConfigError(f"compute.device={choice!r}; expected one of {', '.join(DEVICE_CHOICES)}")
    if choice == "meta":
        return torch.device("meta")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("compute.device=cuda but PyTorch sees no CUDA device (torch.cuda.is_available() is "
                          "False): install a CUDA build of torch, check CUDA_VISIBLE_DEVICES, or set "
                          "compute.device: auto")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))


def config_device(cfg: Config) -> torch.device:
    """The device of a resolved :class:`~pyramid_repro.config.Config` (``compute.device``)."""
    return resolve_device(cfg.compute.device)


class MetaGenerator(torch.Generator):
    """Stands in for a device generator on the ``meta`` device (shape-only runs: meta tensors hold no values, and
    PyTorch has no meta generator). A CPU generator underneath; its type tells the device tests that a draw used
    the job's device generator and not a stray CPU one."""


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with `seed` on `device` (a CUDA draw needs a CUDA generator; on ``meta`` a
    :class:`MetaGenerator` stands in)."""
    device = torch.device(device)
    if device.type == "meta":
        return MetaGenerator().manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def host_int(high: int, generator: torch.Generator | None = None, low: int = 0) -> int:
    """One integer uniform on [low, high), drawn on the generator's own device and read back to the host."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(low, high, (1,), generator=generator, device=dev).item())


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `precision` is ``bf16``; a no-op otherwise (CPU and meta stay fp32)."""
    device = torch.device(device)
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on `device` (before reading a wall clock around GPU work)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


__all__ = ["DEVICE_CHOICES", "MetaGenerator", "autocast", "config_device", "generator", "host_int", "resolve_device",
           "synchronize"]
