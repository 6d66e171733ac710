"""Sharded data parallel (`compute.sharding`, FSDP2): what train/loop.py's TrainingJob does to a model, its optimizer
and its EMA when the weights' state is spread over the processes instead of copied to each.

* `none`: DDP through accelerate, every process holds all weights, gradients, optimizer state and EMA.
* `grads_optimizer` (ZeRO-2): `torch.distributed.fsdp.fully_shard` with `reshard_after_forward=False`: gradients,
  optimizer state, EMA and the fp32 master weights are sharded; a block's gathered weights stay from its forward
  to its backward.
* `full` (ZeRO-3): `reshard_after_forward=True`: the gathered weights are freed after each block's forward and
  gathered again for its backward (one more all-gather per block, the weights' memory too divided by N).

Each transformer block (`DiTModel.block_lists`) is one FSDP unit, the rest of the model (embeddings, final layer) the
root unit. On CUDA with `precision: bf16` the units gather bf16 copies of the fp32 master shards and reduce
gradients in fp32 (`MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`); inputs are not cast (the trainer's
autocast decides, as unsharded). On the CPU everything stays fp32. Gradients are reduce-scattered after every
micro-batch (no `no_sync`: accumulating unsharded gradients would undo ZeRO-2's saving).

Why not accelerate's `FullyShardedDataParallelPlugin(fsdp_version=2)`: accelerate 1.16 ignores the plugin on the
CPU (a multi-process CPU job stays `MULTI_CPU` and is wrapped in DDP), so the CPU tests could not exercise it, and
its checkpoints are distributed-checkpoint folders, not this suite's one-file format. So the job applies
`fully_shard` itself, on accelerate's process group and device (one code path on the CPU/gloo and on CUDA/NCCL);
accelerate still launches the processes and provides autocast, backward, the DTensor-aware gradient clipping
(`clip_grad_norm_` takes the total norm over the shards) and the reductions.

Checkpoints (train/checkpoint.py's format, unchanged): the model, optimizer and EMA states are gathered to full
tensors on the main process's CPU (`full_model_state`, `full_optimizer_state`, `full_tensors`), and loaded from
that full state into whatever sharding the resuming job has (`load_model_state`, `load_optimizer_state`,
`shard_like`), so a job resumes on any number of processes, sharded or not. `plain_copy` builds the unsharded
model (final/, FID snapshots) that `save_pretrained` writes.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

SHARDINGS = ("none", "grads_optimizer", "full")


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(t: Any) -> bool:
    """Whether `t` is a DTensor (a sharded parameter, gradient or state tensor)."""
    return torch.distributed.is_available() and isinstance(t, _dtensor())


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a DTensor (a view: in-place ops change the DTensor), or `t` itself."""
    return t.to_local() if is_sharded(t) else t


def shard_model(model: torch.nn.Module, world: int, device: torch.device, sharding: str,
                bf16: bool) -> torch.nn.Module:
    """`fully_shard` each block of `model.block_lists()` and then the model (the root unit), over all `world`
    processes on `device`; in place (the module's class becomes an FSDPModule subclass, its parameters DTensors,
    their names unchanged). See the module docstring for the two shardings and the mixed precision."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if sharding not in SHARDINGS[1:]:
        raise ValueError(f"sharding {sharding!r}: expected one of {', '.join(SHARDINGS[1:])}")
    if not hasattr(model, "block_lists"):
        raise ValueError(f"{type(model).__name__} has no block_lists(): compute.sharding shards the DiT only")
    # the root unit returns the velocity as a reshaped view; the trainer never changes it in place (what the
    # warning is about), so one line per process and step of it says nothing
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                              reduce_dtype=torch.float32 if bf16 else None, cast_forward_inputs=False)
    kw = dict(mesh=mesh, reshard_after_forward=sharding == "full", mp_policy=mp)
    model.to(device)
    for blocks in model.block_lists():
        for block in blocks:
            fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


def remap_optimizer(optimizer: torch.optim.Optimizer, before: dict[str, torch.nn.Parameter],
                    after: dict[str, torch.nn.Parameter]) -> None:
    """Point an optimizer built on a model's parameters (`before`, by name) at the parameters that replaced them
    (`after`: the sharded ones). The optimizer must have no state yet."""
    new = {id(p): after[name] for name, p in before.items()}
    for group in optimizer.param_groups:
        group["params"] = [new.get(id(p), p) for p in group["params"]]


def full_tensors(state: Any, main: bool) -> Any:
    """A (nested) state dict with every DTensor gathered to its full tensor, on the CPU of the main process (None
    elsewhere), plain tensors copied to the CPU; one tensor at a time, so no device holds more than one full
    tensor. Collective: every process calls it, with the same structure."""
    if isinstance(state, dict):
        return {k: full_tensors(v, main) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(full_tensors(v, main) for v in state)
    if isinstance(state, torch.Tensor):
        full = state.full_tensor() if is_sharded(state) else state
        return full.detach().cpu() if main else None
    return state


def shard_like(full: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """`full` (any device) laid out as `template`: this process's shard as a DTensor with the template's mesh and
    placements when the template is one (cut locally, no communication), else on the template's device."""
    if is_sharded(template):
        from torch.distributed.tensor import distribute_tensor

        t = distribute_tensor(full.to(template.device, template.dtype), template.device_mesh, template.placements,
                              src_data_rank=None)
        if tuple(t.to_local().shape) != tuple(template.to_local().shape):  # pragma: no cover - FSDP2 layout change
            raise RuntimeError(f"resharding a tensor of shape {tuple(full.shape)} gave a local shard of "
                               f"{tuple(t.to_local().shape)} where the model's is {tuple(template.to_local().shape)}")
        return t
    return full.to(template.device, template.dtype)


def full_model_state(model: torch.nn.Module, main: bool) -> dict[str, torch.Tensor]:
    """The sharded model's full state dict on the main process's CPU ({} elsewhere). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    # cpu_offload: gathered one tensor at a time and kept on rank 0's CPU only
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if main else {}


def load_model_state(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (every process holds it) into the sharded model: each process keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True))


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters in state-dict index order."""
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    return [p for group in opt.param_groups for p in group["params"]]


def full_optimizer_state(optimizer: torch.optim.Optimizer, main: bool) -> dict[str, Any]:
    """The optimizer's state dict with its sharded states gathered: on the main process's CPU the same
    `state_dict()` (parameter indices, full tensors) an unsharded optimizer gives; {} elsewhere. Collective."""
    state = optimizer.state_dict()
    gathered = full_tensors(state["state"], main)
    return {"state": gathered, "param_groups": state["param_groups"]} if main else {}


def load_optimizer_state(optimizer: torch.optim.Optimizer, full: dict[str, Any]) -> None:
    """Load an unsharded optimizer state dict (`full_optimizer_state`'s or a plain optimizer's) into an optimizer
    of sharded parameters: each state tensor shaped like its parameter becomes this process's shard of it."""
    params = _params(optimizer)
    state = {}
    for i, entry in full["state"].items():
        p = params[int(i)]
        state[i] = {k: shard_like(v, p) if isinstance(v, torch.Tensor) and is_sharded(p)
                    and tuple(v.shape) == tuple(p.shape) else v for k, v in entry.items()}
    optimizer.load_state_dict({"state": state, "param_groups": full["param_groups"]})


def plain_class(model: torch.nn.Module) -> type:
    """The model's own class (FSDP2 makes a sharded module's class a subclass of FSDPModule and it)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def plain_copy(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An unsharded instance of the sharded `model`'s class (a diffusers ModelMixin, rebuilt from its config on the
    meta device, so never initialised) holding the full state dict `state`, on the CPU, for save_pretrained."""
    cls = plain_class(model)
    with torch.device("meta"):
        copy = cls.from_config(dict(model.config))
    copy.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*copy.named_parameters(), *copy.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{cls.__name__}: {left[:4]} not in the state dict (non-persistent buffers?); the "
                           "unsharded copy for save_pretrained cannot be built")
    for attr in ("attention_kernel", "activation_checkpointing"):  # runtime settings, not in the config
        if hasattr(model, attr):
            setattr(copy, attr, getattr(model, attr))
    return copy
