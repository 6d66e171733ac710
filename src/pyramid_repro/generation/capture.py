"""Captured Euler steps: generation without per-step launch overhead (docs/method.md §3.1).

Inside one (frame, stage) the Euler loop calls the velocity with the same shapes at every step; only the values of
`x` and the timestep change. A backend records that call once and replays it:

* ``none`` (default): eager, every step launches its kernels from Python.
* ``cuda-graph``: a `torch.cuda.CUDAGraph` per (frame, stage). Its first step copies the inputs into static buffers,
  runs the call eagerly on a side stream (the warm-up, whose output is that step's result), then captures it on
  the same side stream into a memory pool shared by every capture of one video; every later step copies its inputs
  into the static buffers, replays the graph and returns a clone of the static output (the next replay overwrites
  it). Under autocast the capture re-enters autocast with ``cache_enabled=False`` (cached casts made during capture
  would be freed while the graph still reads them). Needs a CUDA device.
* ``replay-emulation``: a test and debugging backend with the same buffer protocol that runs anywhere. The recorded
  call runs under `graph_safe` (no host tensor, no host read of a device value) and under a tape of the ATen ops
  it dispatched; its fresh tensors are then poisoned with NaN (a captured graph has computed nothing yet), and each
  replay re-runs exactly the taped ops on the same tensors, so anything the call decided in Python at capture time
  stays frozen, as in a CUDA graph. FlexAttention cannot run under a dispatch mode, so the emulation needs the
  `sdpa` attention kernel (the CPU's default).

What the captured call may do is what a CUDA graph allows: device kernels on tensors that live as long as the
capture (model weights, the KV cache of the stage, the static buffers). The caller builds everything else before
the first call of a stage (history, its keys and values, `PyramidDiT.plan`: positions, mask, RoPE tables).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pyramid_repro.config import ConfigError

CAPTURE_CHOICES = ("none", "cuda-graph", "replay-emulation")
CLI_CAPTURE_CHOICES = ("none", "cuda-graph")  # replay-emulation is for tests and debugging

_aten = torch.ops.aten
# ops that read a device value on the host (.item(), .tolist(), bool(t), float(t)) or whose output size depends on
# tensor values (a host synchronisation): both are illegal inside a CUDA graph capture
_HOST_SYNC = {_aten._local_scalar_dense, _aten.nonzero, _aten.masked_select, _aten.unique_consecutive,
              _aten._unique2, _aten.unique_dim}


class GraphSafetyError(RuntimeError):
    """The captured region did something a CUDA graph cannot record."""


def check_capture(capture: str, device: torch.device | str, option: str = "capture") -> None:
    """Raise a ConfigError (a ValueError) naming `option` when `capture` is unknown or needs a device it has not."""
    def spelled(value: str) -> str:  # as the caller wrote it: --capture none, or capture='none'
        return f"{option} {value}" if option.startswith("-") else f"{option}={value!r}"

    if capture not in CAPTURE_CHOICES:
        raise ConfigError(f"{spelled(capture)}: expected one of {', '.join(CAPTURE_CHOICES)}")
    dev = torch.device(device)
    if capture == "cuda-graph" and dev.type != "cuda":
        raise ConfigError(f"{spelled(capture)} needs a CUDA device (it records each stage's Euler step as a CUDA "
                          f"graph), but generation runs on {dev.type}; use {spelled('none')} there")


class _GraphSafety(TorchDispatchMode):
    """Fails an op that reads a device value on the host, and, unless the region's device is the CPU, an op with a
    tensor on another device among its inputs or outputs (a host tensor made inside the region, or copied to or
    from it: an illegal host-device copy during a CUDA graph capture)."""

    def __init__(self, device: torch.device | str):
        super().__init__()
        self.device = torch.device(device)

    def _check_devices(self, func, leaves) -> None:
        """Tensors and target devices (``device=`` of factories and copies) must be the region's device."""
        if self.device.type == "cpu":
            return
        for x in leaves:
            where = x.device if isinstance(x, torch.Tensor) else x if isinstance(x, torch.device) else None
            if where is not None and where.type != self.device.type:
                raise GraphSafetyError(f"{func}: a tensor on {where} inside a region captured on {self.device.type} "
                                       "(a host tensor created in the captured call, or a copy between host and "
                                       "device; build it before the capture, on the device)")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in _HOST_SYNC:
            raise GraphSafetyError(f"{func}: reads a device value on the host (.item(), .tolist(), bool() or a "
                                   "data-dependent shape) inside a captured region")
        self._check_devices(func, tree_leaves((args, kwargs)))
        out = func(*args, **kwargs)
        self._check_devices(func, tree_leaves(out))
        return out


def graph_safe(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Context in which every op must be recordable in a CUDA graph on `device`; raises GraphSafetyError otherwise.
    On the ``meta`` device this checks a forward's graph safety without a GPU (meta tensors hold no values, and a
    host tensor meeting them is caught here even when code copies it over with ``.to(device)``)."""
    return _GraphSafety(device)


def _storage_key(t: torch.Tensor) -> int:
    return 0 if t.device.type == "meta" else t.untyped_storage().data_ptr()


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Replays re-run ops that autocast already rewrote: run them as recorded."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class OpTape(TorchDispatchMode):
    """The ATen ops of one call on `device`, with the very tensors they read and wrote: `replay` re-runs them in
    order on those tensors (out-of-place results copied into the recorded outputs, in-place ops re-applied, views
    left alone since they alias tensors that are refreshed), the CPU stand-in of replaying a CUDA graph. Ops are
    recorded after autocast and autograd, so they replay with both off."""

    def __init__(self, device: torch.device | str = "cpu"):
        super().__init__()
        self.device = torch.device(device)
        self.ops: list[tuple] = []
        self._external: set[int] = set()  # storages that existed before the call (weights, static inputs, cache)
        self._fresh: set[int] = set()  # storages the call created

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and _storage_key(t) not in self._fresh:
                self._external.add(_storage_key(t))
        out = func(*args, **kwargs)
        if func._schema.is_mutable:
            kind = "mutate"
        elif any(r.alias_info is not None for r in func._schema.returns):
            kind = "view"
        else:
            kind = "fresh"
            self._fresh.update(_storage_key(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        self.ops.append((func, args, kwargs, out, kind))
        return out

    def poison(self) -> None:
        """Fill what the call created with NaN: a captured CUDA graph has not computed anything yet."""
        for *_, out, kind in self.ops:
            if kind != "fresh":
                continue
            for t in tree_leaves(out):
                key = _storage_key(t) if isinstance(t, torch.Tensor) else None
                if key is not None and t.is_floating_point() and key not in self._external:
                    t.fill_(float("nan"))

    def replay(self) -> None:
        """Re-run the recorded ops on the recorded tensors."""
        with torch.no_grad(), _no_autocast(self.device):
            for func, args, kwargs, out, kind in self.ops:
                if kind == "view":
                    continue
                new = func(*args, **kwargs)
                if kind == "mutate":
                    continue
                for o, n in zip(tree_leaves(out), tree_leaves(new)):
                    if isinstance(o, torch.Tensor) and o.device.type != "meta" and _storage_key(o) != _storage_key(n):
                        o.copy_(n)


def _capture_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The caller's autocast for `device`, with the cast cache off (required inside a CUDA graph capture)."""
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, dtype=torch.get_autocast_dtype(device.type), cache_enabled=False)
    return contextlib.nullcontext()


class CapturedStep:
    """One captured velocity call `fn(*inputs) -> tensor`, reused while its inputs keep their shapes, dtypes and
    device; a call with other shapes releases the capture and makes a new one. The buffer protocol is shared by
    the backends; they differ in `_record` and `_replay`."""

    def __init__(self, fn: Callable[..., torch.Tensor], session: "CaptureSession"):
        self.fn, self.session = fn, session
        self.key: tuple | None = None
        self.static_inputs: tuple[torch.Tensor, ...] = ()
        self.static_out: torch.Tensor | None = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
        if key != self.key:
            self.release()
            self.static_inputs = tuple(t.detach().clone() for t in inputs)
            first = self._record()
            self.key = key
            self.session.captures += 1
            return first
        self._load(inputs)
        self._replay()
        self.session.replays += 1
        return self._result()

    def _load(self, inputs: tuple[torch.Tensor, ...]) -> None:
        """Copy this step's inputs into the static buffers the capture reads."""
        for buf, t in zip(self.static_inputs, inputs):
            buf.copy_(t)

    def _result(self) -> torch.Tensor:
        """A copy of the static output: the next replay overwrites the buffer."""
        return self.static_out.clone()

    def _record(self) -> torch.Tensor:
        """Warm up on the static inputs, capture; returns the warm-up's output (this call's result)."""
        raise NotImplementedError

    def _replay(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """Drop the capture and its buffers."""
        self.key, self.static_inputs, self.static_out = None, (), None


class EmulatedStep(CapturedStep):
    """The `replay-emulation` backend (tests and debugging): eager warm-up, then the recorded call under
    `graph_safe` and a tape of its ops; replays re-run the tape."""

    tape: OpTape | None = None

    def _record(self) -> torch.Tensor:
        first = self.fn(*self.static_inputs).clone()
        dev = self.static_inputs[0].device
        tape = OpTape(dev)
        with graph_safe(dev), tape, _capture_autocast(dev):
            self.static_out = self.fn(*self.static_inputs)
        tape.poison()
        self.tape = tape
        return first

    def _replay(self) -> None:
        self.tape.replay()

    def release(self) -> None:
        super().release()
        self.tape = None


class CudaGraphStep(CapturedStep):
    """The `cuda-graph` backend: warm-up on the session's side stream, capture into the session's memory pool on
    that stream, replay on the current stream."""

    graph = None

    def _record(self) -> torch.Tensor:
        cuda, s = self.session.cuda, self.session.stream
        dev = self.static_inputs[0].device
        main = cuda.current_stream(dev)
        s.wait_stream(main)
        with cuda.stream(s), _capture_autocast(dev):
            out = self.fn(*self.static_inputs)
        main.wait_stream(s)
        first = out.clone()
        del out
        self.graph = cuda.CUDAGraph()
        with cuda.graph(self.graph, pool=self.session.pool, stream=s), _capture_autocast(dev):
            self.static_out = self.fn(*self.static_inputs)
        return first

    def _replay(self) -> None:
        self.graph.replay()

    def release(self) -> None:
        super().release()
        self.graph = None


class CaptureSession:
    """The captures of one generation call (one video batch): the backend, for `cuda-graph` one side stream and one
    graph memory pool shared by all its captures (a capture is released before the next is made, so the pool is
    reused stage after stage), and counters (captures made, replays run) for tests and benchmarks."""

    steps = {"cuda-graph": CudaGraphStep, "replay-emulation": EmulatedStep}

    def __init__(self, backend: str = "none", device: torch.device | str = "cpu", cuda=None):
        """`cuda`: the torch.cuda API the cuda-graph backend calls (tests pass a stand-in to run it on the CPU;
        then the device check is theirs)."""
        if cuda is None:
            check_capture(backend, device)
        self.backend = backend
        self.cuda = cuda if cuda is not None else torch.cuda
        self.captures = self.replays = 0
        self.stream = self.pool = None
        if backend == "cuda-graph":
            self.stream = self.cuda.Stream(torch.device(device))
            self.pool = self.cuda.graph_pool_handle()

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """`fn` itself for `none`, else a CapturedStep of the backend around it."""
        if self.backend == "none":
            return fn
        return self.steps[self.backend](fn, self)


__all__ = ["CAPTURE_CHOICES", "CLI_CAPTURE_CHOICES", "CaptureSession", "CapturedStep", "CudaGraphStep",
           "EmulatedStep", "GraphSafetyError", "OpTape", "check_capture", "graph_safe"]
