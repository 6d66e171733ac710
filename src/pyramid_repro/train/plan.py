"""The memory plan of a training job (docs/design.md §8): what one process of a DiT curriculum stage or of the VAE
holds on its device, measured before anything is allocated there.

* **Model states** are bytes per parameter, counted on the real model built on the ``meta`` device (weights,
  gradients and the optimizer's state of what the trainer optimises; :class:`StateBytes` says how many bytes each
  takes and how `compute.sharding` divides them among the processes).
* **Activations** are measured, not derived from a formula: the trainer's own forward and loss
  (train/dit.py `flow_matching_loss` on a batch of train/sequences.py `make_batch`; the VAE's forward and
  generator loss) run on the ``meta`` device under `torch.autograd.graph.saved_tensors_hooks`, which sees every
  tensor autograd keeps for the backward pass; tensors are counted once per storage (views share one), parameters
  and the bf16 copies autocast makes of them are not activations (the copies are counted with the states). The
  batch is the stage's worst draw (the (pyramid stage, frame) draw with the most tokens: the finest stage, last
  latent frame with its whole history) at the stage's micro-batch.
* The meta device has no kernels of its own for two things that decide the figure, so :class:`_TargetEmulation`
  stands in for the target device while the forward runs: CUDA's bf16 autocast (the casts its op lists make:
  matrix products and convolutions in bf16, norms, reductions and losses in fp32) and what the attention kernel in
  use keeps for the backward pass: FlexAttention (``auto`` on CUDA) keeps q, k, v, the output and the log-sum-exp,
  never the score matrix; dense-mask SDPA keeps what the target's SDPA kernel keeps (on the CPU: PyTorch's CPU
  flash kernel with the mask turned into a float bias per call; on CUDA: the memory-efficient kernel with its bias).
  With target ``cpu`` the figure equals what a real CPU forward saves (tests/test_plan.py).
* **Activation checkpointing** (`train.activation_checkpointing` r): a DiT checkpoints the first round(r * n) blocks
  of each of its block lists (non-reentrant: a checkpointed block keeps its inputs and recomputes its activations
  once, during backward). Every saved tensor is attributed to the block that saved it (or to none), so one
  measurement gives the figure for any ratio: what is saved outside the blocks + the inputs of the checkpointed
  blocks + everything the other blocks save + the largest recomputed block (:meth:`Census.activations`).
* Activations are linear in the micro-batch: the largest micro-batch that fits is solved from two measurements and
  verified by a third (:func:`max_micro_batch`).

Left out (docs/design.md §8): the CUDA context, allocator slack and fragmentation, NCCL buffers, compile
workspaces, the transient tensors of one op (an activation's gradient during backward), the latent cache and
caption embeddings the DiT trainer keeps on the device (they scale with the data set), the data loader.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.nn.attention import SDPBackend
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from pyramid_repro.config import Config, ConfigError, CurriculumStage, for_experiment
from pyramid_repro.device import config_device
from pyramid_repro.device import generator as device_generator
from pyramid_repro.experiments import selected_experiments, training_experiments
from pyramid_repro.flow import PyramidSchedule, cost
from pyramid_repro.generation.generate import TextCondition
from pyramid_repro.models import build_dit
from pyramid_repro.models.base import checkpointed_blocks
from pyramid_repro.models.attention import resolve_kernel, set_kernel
from pyramid_repro.models.text import MiniLMEncoder
from pyramid_repro.releases import config_release
from pyramid_repro.train.dit import flow_matching_loss, packed_size
from pyramid_repro.train.sequences import make_batch
from pyramid_repro.vae.losses import LPIPS, VAELoss
from pyramid_repro.vae.model import build_vae

GB = 1e9  # the plan's unit: 10^9 bytes (an "80 GB" A100 has 85.1e9 bytes, 79.2 GiB)
META = torch.device("meta")
SHARDINGS = ("none", "grads_optimizer", "full")
# text embedding sizes (tokens, pooled) of the text encoders, so the plan never loads one: MiniLM's 384/384; the
# paper's T5-XXL (d_model 4096) tokens and CLIP-L + CLIP-G projections (768 + 1280) pooled
TEXT_DIMS = {"minilm": (MiniLMEncoder.token_dim, MiniLMEncoder.pooled_dim), "clip_t5": (4096, 768 + 1280)}


# --------------------------------------------------------------------------------------------------------------
# Model states
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateBytes:
    """Bytes per parameter of a training process's model states, before sharding: fp32 master weights (4), fp32
    gradients (4), AdamW's two fp32 moments (8), the fp32 EMA (4) and, when a stage trains in bf16 on CUDA,
    the bf16 copies autocast makes of the weights for the forward (2; kept for backward). With several processes
    and no sharding, DDP keeps its own fp32 gradient buckets beside the gradients (4)."""

    weights: int = 4
    grads: int = 4
    optimizer: int = 8
    ema: int = 4
    compute_copy: int = 2
    ddp_buckets: int = 4


BYTES = StateBytes()


def states(params: int, block_params: int, processes: int, sharding: str, bf16: bool, ema: bool = True,
           extra_trained: int = 0, frozen: int = 0) -> dict[str, float]:
    """Bytes per process of the model states of `params` trained parameters (largest block: `block_params`)
    over `processes` processes under `sharding` (compute.sharding):

    * none: weights, gradients, optimizer state and EMA replicated (plus DDP's gradient buckets when processes > 1,
      and autocast's bf16 copies of the weights);
    * grads_optimizer (ZeRO-2, FSDP2 without resharding after forward; train/sharding.py): the fp32 weights,
      gradients, optimizer state and EMA divided among the processes, and every block's gathered weights (in the
      compute dtype) held from its forward to its backward: the whole model, unsharded, at the start of backward;
    * full (ZeRO-3): all of them divided, plus one block's unsharded weights gathered at a time (in the compute
      dtype).

    `extra_trained`: parameters of a second trained network without EMA (the VAE's discriminator), replicated;
    `frozen`: fp32 parameters that are not trained (the VAE's LPIPS network)."""
    if sharding not in SHARDINGS:
        raise ConfigError(f"compute.sharding={sharding!r}; expected one of {', '.join(SHARDINGS)}")
    n = max(1, processes)
    if n == 1:
        sharding = "none"  # one process is not sharded (train/sharding.py applies FSDP2 from two processes on)
    b = BYTES
    split = {"none": (1, 1), "grads_optimizer": (n, n), "full": (n, n)}[sharding]  # (weights, the rest)
    out = {"weights": b.weights * params / split[0],
           "grads": b.grads * params / split[1],
           "optimizer": b.optimizer * params / split[1],
           "ema": b.ema * params / split[1] if ema else 0.0,
           "compute_copies": 0.0, "ddp_buckets": 0.0, "gathered_block": 0.0}
    gathered = b.compute_copy if bf16 else b.weights  # bytes per parameter of FSDP's unsharded weights
    if bf16 and sharding == "none":
        out["compute_copies"] = b.compute_copy * params
    if sharding == "grads_optimizer":
        out["gathered_block"] = gathered * params
    if sharding == "full":
        out["gathered_block"] = gathered * block_params
    if sharding == "none" and n > 1:
        out["ddp_buckets"] = b.ddp_buckets * params
    # a discriminator (weights, gradients, AdamW) and frozen networks: small, replicated, bf16 copies included
    out["weights"] += b.weights * (extra_trained + frozen)
    out["grads"] += b.grads * extra_trained
    out["optimizer"] += b.optimizer * extra_trained
    if bf16:
        out["compute_copies"] += b.compute_copy * (extra_trained + frozen)
    return out


# --------------------------------------------------------------------------------------------------------------
# Saved-tensor census
# --------------------------------------------------------------------------------------------------------------


def storage_key(t: torch.Tensor) -> int:
    """Identity of a tensor's storage (views share it; meta tensors have one too). Only stable while the storage
    is alive: a census keeps every tensor it saw."""
    return t.untyped_storage()._cdata


def block_lists(model: torch.nn.Module) -> list[torch.nn.ModuleList]:
    """The transformer block lists of a DiT, in forward order (`DiTModel.block_lists`: what activation
    checkpointing and sharding act on); none for a model without them (the VAE)."""
    lists = getattr(model, "block_lists", None)
    return list(lists()) if callable(lists) else []


def checkpointed_count(blocks: int, ratio: float) -> int:
    """How many of a list's `blocks` are checkpointed at `ratio` (train.activation_checkpointing): the models'
    rule, `models.base.checkpointed_blocks`."""
    return checkpointed_blocks(blocks, ratio)


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


@dataclass
class Census:
    """The storages autograd kept for the backward pass of one forward: their bytes, which were saved outside any
    block, which each block saved, and each block's inputs (what a checkpointed block keeps instead)."""

    nbytes: dict[int, int] = field(default_factory=dict)  # every storage seen (saved or a block's input)
    outside: set[int] = field(default_factory=set)
    saved: list[list[set[int]]] = field(default_factory=list)  # [block list][block] -> storages it saved
    inputs: list[list[set[int]]] = field(default_factory=list)  # [block list][block] -> storages of its inputs
    keep: list = field(default_factory=list, repr=False)  # the tensors themselves, so no storage is reused

    def _sum(self, keys) -> int:
        return sum(self.nbytes[k] for k in keys)

    def saved_storages(self) -> set[int]:
        out = set(self.outside)
        for blocks in self.saved:
            for s in blocks:
                out |= s
        return out

    def total(self) -> int:
        """Bytes saved for backward without checkpointing."""
        return self._sum(self.saved_storages())

    def activations(self, ratio: float = 0.0) -> tuple[int, int]:
        """(bytes kept through the backward pass, the recompute peak of one checkpointed block) with the first
        round(ratio * n) blocks of each list checkpointed: the storages saved outside the blocks, the inputs of
        the checkpointed blocks and everything the other blocks save, counted once; the peak is the largest set
        a checkpointed block recomputes that is not among them."""
        kept, recomputed = set(self.outside), []
        for saved, inputs in zip(self.saved, self.inputs):
            n = checkpointed_count(len(saved), ratio)
            for i, (s, inp) in enumerate(zip(saved, inputs)):
                if i < n:
                    kept |= inp
                    recomputed.append(s)
                else:
                    kept |= s
        peak = max((self._sum(s - kept) for s in recomputed), default=0)
        return self._sum(kept), peak


def _signature(x: Any) -> Any:
    """Metadata of a block call's arguments: what decides the tensors it saves (shapes, strides, dtypes)."""
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.stride(), x.dtype, x.device.type, x.requires_grad)
    if isinstance(x, (list, tuple)):
        return tuple(_signature(y) for y in x)
    if isinstance(x, dict):
        return tuple((k, _signature(v)) for k, v in sorted(x.items()))
    if isinstance(x, (int, float, bool, str, type(None))):
        return x
    return (type(x).__name__, id(x))


def _module_signature(m: torch.nn.Module) -> Any:
    return (type(m).__name__, tuple((n, type(c).__name__) for n, c in m.named_modules()),
            tuple((n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in m.named_parameters()),
            tuple(sorted((k, v) for k, v in vars(m).items() if isinstance(v, (int, float, bool, str)))))


@dataclass
class _BlockRecord:
    """What one block call saved, by where each storage came from: ("input", position among the call's input
    tensors), ("output", position among its outputs), ("shared", storage key: something the block did not create,
    e.g. a mask's tables) or ("fresh", bytes: created in the call); and its outputs' metadata."""

    saved: list[tuple[str, Any]]
    outputs: Any


def census(run: Callable[[], Any], model: torch.nn.Module | None = None,
           exclude: Callable[[torch.Tensor], bool] | None = None,
           frozen: tuple[torch.nn.Module, ...] = (), replay: bool = False) -> Census:
    """Run `run()` (a forward and loss) and record every tensor autograd saves for backward, by storage, attributed
    to the block of `model` (block_lists) whose forward saved it. Parameters of `model` and of the `frozen`
    modules (other networks of the loss), and what `exclude` says, do not count. Works on any device: the plan
    runs it on meta, the tests on the CPU against the plan.

    `replay` (meta only): a block whose parameters and arguments have the same metadata as two blocks before it
    that ran saves what the second of them saved (its inputs and outputs in the same places, new storages of the
    same sizes, shared storages shared), so it is not run again: the blocks of a DiT are identical, and a 2B
    model's forward on meta then costs two blocks per block list instead of all of them."""
    c = Census()
    lists = block_lists(model) if model is not None else []
    c.saved = [[set() for _ in bl] for bl in lists]
    c.inputs = [[set() for _ in bl] for bl in lists]
    params = {storage_key(p) for m in (model, *frozen) if m is not None for p in m.parameters()}
    active: list[tuple[int, int]] = []
    records: dict[Any, list] = {}  # signature -> [saved set of the first call, _BlockRecord of the second]
    fresh_keys = iter(range(-1, -(1 << 62), -1))  # storages a replay stands for (never a real storage's key)

    def pack(t: torch.Tensor):
        if t.layout == torch.strided and not (exclude is not None and exclude(t)):
            k = storage_key(t)
            if k not in params:
                c.nbytes[k] = t.untyped_storage().nbytes()
                c.keep.append(t)
                (c.saved[active[-1][0]][active[-1][1]] if active else c.outside).add(k)
        return t

    def run_block(blk, li, bi, args, kwargs):
        sig = (_module_signature(blk), _signature((args, kwargs)))
        ins = [storage_key(t) for t in _tensors((args, kwargs))]
        rec = records.get(sig)
        if rec is not None and isinstance(rec[-1], _BlockRecord):
            return _replay(rec[-1], li, bi, ins)
        seen = set(c.nbytes) - set(ins)
        out = type(blk).forward(blk, *args, **kwargs)
        saved = c.saved[li][bi]
        outs = [storage_key(t) for t in _tensors(out)]
        if any(k in ins for k in outs) or len(set(outs)) != len(outs):
            records[sig] = [None]  # an output aliases an input: always run
            return out
        if rec is None:
            records[sig] = [set(saved)]
        elif rec[0] is not None:
            where = []
            for k in saved:
                if k in ins:
                    where.append(("input", ins.index(k)))
                elif k in outs:
                    where.append(("output", outs.index(k)))
                elif k in seen or k in rec[0]:
                    where.append(("shared", k))
                else:
                    where.append(("fresh", c.nbytes[k]))
            records[sig] = [rec[0], _BlockRecord(where, _meta_of(out))]
        return out

    def _replay(rec: _BlockRecord, li, bi, ins):
        out = _fresh_like(rec.outputs)
        outs = [storage_key(t) for t in _tensors(out)]
        c.keep.append(out)
        saved = c.saved[li][bi]
        for kind, x in rec.saved:
            if kind == "input":
                saved.add(ins[x])
            elif kind == "output":
                c.nbytes[outs[x]] = list(_tensors(out))[x].untyped_storage().nbytes()
                saved.add(outs[x])
            elif kind == "shared":
                saved.add(x)
            else:
                k = next(fresh_keys)
                c.nbytes[k] = x
                saved.add(k)
        return out

    handles, patched = [], []
    for li, bl in enumerate(lists):
        for bi, blk in enumerate(bl):
            def pre(mod, args, kwargs, li=li, bi=bi):
                active.append((li, bi))
                for t in _tensors((args, kwargs)):
                    k = storage_key(t)
                    if k not in params:
                        c.inputs[li][bi].add(k)
                        c.nbytes[k] = t.untyped_storage().nbytes()
                        c.keep.append(t)

            def post(mod, args, kwargs, out):
                active.pop()

            handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(blk.register_forward_hook(post, with_kwargs=True))
            if replay:
                blk.forward = (lambda *a, blk=blk, li=li, bi=bi, **k: run_block(blk, li, bi, a, k))
                patched.append(blk)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            run()
    finally:
        for h in handles:
            h.remove()
        for blk in patched:
            del blk.forward
    return c


def _meta_of(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return ("T", tuple(out.shape), out.stride(), out.dtype, out.device, out.requires_grad)
    if isinstance(out, (list, tuple)):
        return type(out)(_meta_of(o) for o in out)
    return out


def _fresh_like(spec: Any) -> Any:
    """New tensors of the recorded metadata; ones that require grad are made non-leaf (a view of a leaf), as the
    block's real outputs are."""
    if isinstance(spec, tuple) and spec and spec[0] == "T":
        t = torch.empty_strided(spec[1], spec[2], dtype=spec[3], device=spec[4], requires_grad=spec[5])
        return t.view_as(t) if spec[5] else t
    if isinstance(spec, (list, tuple)):
        return type(spec)(_fresh_like(s) for s in spec)
    return spec


# --------------------------------------------------------------------------------------------------------------
# The target device, emulated on meta: autocast and the attention kernel
# --------------------------------------------------------------------------------------------------------------

# CUDA autocast's op lists (torch.amp, "CUDA Ops that can autocast to float16/float32" and the promoting ops),
# by function name as a TorchFunctionMode sees it
AUTOCAST_LOWER = frozenset({
    "linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "addmm", "addbmm", "addmv", "addr",
    "mv", "chain_matmul", "multi_dot", "einsum", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "prelu", "scaled_dot_product_attention"})
AUTOCAST_FP32 = frozenset({
    "__pow__", "__rpow__", "__rdiv__", "__rtruediv__", "pow", "acos", "asin", "cosh", "sinh", "tan", "erfinv",
    "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt", "softplus", "layer_norm",
    "group_norm", "norm", "normalize", "frobenius_norm", "nuclear_norm", "cosine_similarity", "poisson_nll_loss",
    "cosine_embedding_loss", "nll_loss", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss",
    "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist",
    "renorm", "logsumexp", "softmax", "log_softmax", "softmin", "cumprod", "cumsum", "prod", "sum"})
AUTOCAST_PROMOTE = frozenset({"addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sampler",
                              "index_put", "scatter_add", "tensordot", "cat", "concat", "concatenate", "stack",
                              "index_copy"})
FLEX_BLOCK = 128  # FlexAttention's block size (models/attention.py MaskSpec.block_mask)


class _FlexKeeps(torch.autograd.Function):
    """FlexAttention as far as memory goes: keeps q, k, v, the output and the fp32 log-sum-exp (and the block
    mask's tables) for backward."""

    @staticmethod
    def forward(ctx, q, k, v, tables):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse, tables)
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - the plan never runs backward
        q, k, v, *_ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None


def _bias(mask: torch.Tensor, dtype: torch.dtype, align: int = 1) -> torch.Tensor:
    """A boolean attention mask as the additive float bias SDPA turns it into (a new tensor per call), its last
    dimension padded to a multiple of `align` as the CUDA kernel pads it."""
    n = mask.shape[-1]
    padded = -(-n // align) * align
    bias = torch.zeros(*mask.shape[:-1], padded, dtype=dtype, device=mask.device)
    return bias[..., :n]


def _cpu_sdpa_backend(q: torch.Tensor, mask: torch.Tensor | None) -> int:
    """The SDPA backend PyTorch picks on the CPU for inputs like these (dtype, head size, mask or not): asked of
    the real selector on two-token CPU tensors."""
    shape = (1, 1, 2, q.shape[-1])
    x = torch.zeros(shape, dtype=q.dtype, requires_grad=q.requires_grad)
    m = None if mask is None else torch.ones(1, 1, 2, 2, dtype=mask.dtype)
    return int(torch._fused_sdp_choice(x, x, x, attn_mask=m))


class _TargetEmulation(TorchFunctionMode):
    """What the meta device cannot tell: the target's autocast (`autocast_dtype`, CUDA's op lists) and what the
    attention kernel keeps (`target` cpu|cuda, `kernel` sdpa|flex). Also answers float()/item() of a meta tensor
    with 0 (a loss's logged value). Records the storages of autocast's copies of parameters (`copies`) and of the
    dense masks the model passed to attention (`dense_masks`: stand-ins for FlexAttention's block mask)."""

    def __init__(self, target: str, kernel: str, autocast_dtype: torch.dtype | None):
        super().__init__()
        self.target, self.kernel, self.dtype = target, kernel, autocast_dtype
        self.cast_cache: dict[int, torch.Tensor] = {}
        self.copies: set[int] = set()
        self.dense_masks: set[int] = set()
        self.tables: dict[int, torch.Tensor] = {}

    def _cast(self, t: Any, to: torch.dtype, only: tuple[torch.dtype, ...]) -> Any:
        if isinstance(t, (list, tuple)):
            return type(t)(self._cast(x, to, only) for x in t)
        if not isinstance(t, torch.Tensor) or t.dtype not in only or t.dtype == to:
            return t
        if isinstance(t, torch.nn.Parameter):  # autocast caches its casts of weights (leaves requiring grad)
            if id(t) not in self.cast_cache:
                c = t.to(to)
                self.cast_cache[id(t)] = c
                self.copies.add(storage_key(c))
            return self.cast_cache[id(t)]
        return t.to(to)

    def _autocast(self, name: str, args, kwargs):
        low = self.dtype
        if low is None:
            return args, kwargs
        if name in AUTOCAST_LOWER:
            rule = (low, (torch.float32, torch.float16, torch.bfloat16))
        elif name in AUTOCAST_FP32:
            rule = (torch.float32, (torch.float16, torch.bfloat16))
        elif name in AUTOCAST_PROMOTE:
            floats = [t.dtype for t in _tensors((args, kwargs)) if t.is_floating_point()]
            if not floats:
                return args, kwargs
            wide = max(floats, key=lambda d: torch.finfo(d).bits)
            rule = (wide, (torch.float32, torch.float16, torch.bfloat16))
        else:
            return args, kwargs
        return (tuple(self._cast(a, *rule) for a in args), {k: self._cast(v, *rule) for k, v in kwargs.items()})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("__float__", "item") and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return 0.0
        if name == "scaled_dot_product_attention":
            return self._attention(func, args, kwargs)
        args, kwargs = self._autocast(name, args, kwargs)
        return func(*args, **kwargs)

    def _attention(self, func, args, kwargs):
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        a = dict(zip(names, args)) | kwargs
        q, k, v, mask = a["query"], a["key"], a["value"], a.get("attn_mask")
        if mask is not None:
            self.dense_masks.add(storage_key(mask))
        if self.kernel == "flex":
            # FlexAttention is no autocast op: it gets q, k, v as the model made them. Its block mask's tables:
            # (num_blocks, indices) for kv and q, full and partial, int32, shared by every block of the forward
            if mask is not None:
                key = storage_key(mask)
                if key not in self.tables:
                    B, nq, nk = mask.shape[0], -(-q.shape[-2] // FLEX_BLOCK), -(-k.shape[-2] // FLEX_BLOCK)
                    self.tables[key] = q.new_empty(B * (4 * nq * nk + 2 * nq + 2 * nk), dtype=torch.int32)
                tables = self.tables[key]
            else:
                tables = q.new_empty(0, dtype=torch.int32)
            return _FlexKeeps.apply(q, k, v, tables)
        if self.dtype is not None:
            q, k, v = (self._cast(t, self.dtype, (torch.float32,)) for t in (q, k, v))
        scale = a.get("scale")
        if self.target == "cpu":
            if _cpu_sdpa_backend(q, mask) == int(SDPBackend.FLASH_ATTENTION):
                bias = None if mask is None else _bias(mask, q.dtype)
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    q, k, v, 0.0, bool(a.get("is_causal", False)), attn_mask=bias, scale=scale)[0]
            return func(q, k, v, attn_mask=mask, scale=scale)  # the math kernel: meta runs the same decomposition
        # CUDA, dense mask: the memory-efficient kernel with the mask as a float bias (last dim padded to 16)
        bias = None if mask is None else _bias(mask, q.dtype, 16)
        return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, scale=scale)[0]


_PLAIN = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format})


class _MetaOpCache(TorchDispatchMode):
    """Speeds up a forward on the meta device (PyTorch computes most meta outputs in Python, about a millisecond
    an op; a 2B-parameter forward is thousands of ops, most repeated block after block with the same shapes): the
    first call of an op with given input metadata runs for real; later calls with the same metadata get fresh
    meta tensors of the recorded sizes, strides and dtypes. An op whose output shared an input's storage (views,
    in-place ops) always runs for real, so storage sharing, which the census counts by, is never invented."""

    _outputs: dict[Any, Any] = {}  # shared by every census of the process
    _never: set[Any] = set()

    @staticmethod
    def _key(x: Any) -> Any:
        t = type(x)
        if t in _PLAIN:
            return x
        if isinstance(x, torch.Tensor):
            return (x.shape, x.stride(), x.dtype, x.device.type)  # (an offset changes no output's metadata)
        if t is list or t is tuple:
            return tuple([_MetaOpCache._key(y) for y in x])
        if t is dict:
            return tuple([(k, _MetaOpCache._key(v)) for k, v in sorted(x.items())])
        if isinstance(x, torch.Generator):
            return "generator"
        raise TypeError  # anything else: not cached

    @staticmethod
    def _meta(out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return ("T", tuple(out.shape), out.stride(), out.dtype, out.device)
        if isinstance(out, (list, tuple)):
            return type(out)(_MetaOpCache._meta(o) for o in out)
        return out

    @staticmethod
    def _make(spec: Any) -> Any:
        if isinstance(spec, tuple) and spec and spec[0] == "T":
            return torch.empty_strided(spec[1], spec[2], dtype=spec[3], device=spec[4])
        if isinstance(spec, (list, tuple)):
            return type(spec)(_MetaOpCache._make(s) for s in spec)
        return spec

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            key = (func, self._key(args), self._key(kwargs))
            hash(key)
        except TypeError:
            return func(*args, **kwargs)
        if key in self._outputs:
            return self._make(self._outputs[key])
        out = func(*args, **kwargs)
        if key not in self._never:
            ins = {storage_key(t) for t in _tensors((args, kwargs)) if t.layout == torch.strided}
            outs = list(_tensors(out))
            fresh = all(t.is_meta and t.layout == torch.strided and storage_key(t) not in ins
                        and torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
                        .untyped_storage().nbytes() == t.untyped_storage().nbytes() for t in outs)
            if fresh and len({storage_key(t) for t in outs}) == len(outs) \
                    and all(t.is_meta for t in _tensors((args, kwargs))):
                self._outputs[key] = self._meta(out)
            else:
                self._never.add(key)
        return out


# --------------------------------------------------------------------------------------------------------------
# DiT stages
# --------------------------------------------------------------------------------------------------------------


def release_model(cfg: Config) -> tuple[type, dict] | None:
    """The class and constructor arguments of the release transformer the config fine-tunes (`release`: the class
    train/dit.py starts from, read from its config.json, no weights); None without a release."""
    rel = config_release(cfg)
    return None if rel is None else (rel.kind.model_class, rel.transformer_kwargs(cfg.release_resolution))


def text_dims(cfg: Config) -> tuple[int, int]:
    """(token, pooled) embedding sizes of the profile's text encoder (TEXT_DIMS), or those the release's
    transformer takes, without loading either."""
    spec = release_model(cfg)
    if spec is not None:
        return spec[1]["text_dim"], spec[1]["pooled_dim"]
    if cfg.text_encoder.kind not in TEXT_DIMS:
        raise ConfigError(f"text_encoder.kind={cfg.text_encoder.kind!r}: the memory plan knows {list(TEXT_DIMS)}")
    return TEXT_DIMS[cfg.text_encoder.kind]


_MODELS: dict[str, torch.nn.Module] = {}
_CENSUS: dict[Any, Census] = {}  # measured forwards, shared by the rows (experiments) with the same shapes


def _census_key(cfg: Config, stage: CurriculumStage, draw: tuple[int, int]) -> Any:
    """What a DiT census depends on besides the micro-batch and the target: the model's configuration (but not
    which frames attend to which: a mask's values change no tensor's size) and the metadata of a one-sample batch
    of the draw as train/sequences.py builds it."""
    model = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in ("attention", "attention_kernel")}
    model = release_model(cfg) or model
    with _MetaOpCache():
        b, text, full = dit_batch(cfg, stage, 1, draw)
    tensors = [*b.history, b.current, b.target, b.timestep, text.tokens, text.mask, text.pooled]
    meta = tuple((tuple(t.shape), t.stride(), t.dtype, t.untyped_storage().nbytes()) for t in tensors)
    return repr((model, cfg.vae.latent_channels, text_dims(cfg), meta, full))


def meta_dit(cfg: Config) -> torch.nn.Module:
    """The DiT train/dit.py trains, on the meta device, in training mode: the profile's (models.build_dit), or the
    release's class at its transformer's size when the config fine-tunes one; cached per model configuration."""
    D, P = text_dims(cfg)
    spec = release_model(cfg)
    key = repr((dataclasses.asdict(cfg.model), cfg.vae.latent_channels, D, P, spec))
    if spec is not None and key not in _MODELS:
        with torch.device(META):
            _MODELS[key] = set_kernel(spec[0](**spec[1]), cfg.model.attention_kernel).train()
    if key not in _MODELS:
        # the plan accounts for checkpointing itself (Census.activations): the model it measures runs without
        plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, activation_checkpointing=0.0))
        with torch.device(META):
            _MODELS[key] = build_dit(plain, D, P).train()
    return _MODELS[key]


def latent_shape(cfg: Config, stage: CurriculumStage) -> tuple[int, int, int]:
    """(latent frames, height, width) of a curriculum stage's clips."""
    v = cfg.vae
    return (cost.latent_frames(stage.frames, v.temporal_compression), stage.height // v.spatial_compression,
            stage.width // v.spatial_compression)


def worst_draw(cfg: Config, stage: CurriculumStage, share: int = 0) -> tuple[tuple[int, int], int, int]:
    """((pyramid stage, frame), samples, video tokens per sample) of the stage's costliest micro-batch: the draw
    with the most video tokens (the finest stage, the last frame with its whole history; the full sequence has one
    draw). With token-packed micro-batches (`micro_batch_tokens`, `share` samples per process and step) the draw
    whose packed micro-batch holds the most tokens."""
    T, h, w = latent_shape(cfg, stage)
    p, patch = cfg.pyramid, cfg.model.patch_size
    draws = [(0, 0)] if p.stages == 1 else [(k, j) for k in range(p.stages) for j in range(T)]
    tokens = {d: cost.draw_video_tokens(d, T, h, w, patch, p) for d in draws}
    if stage.micro_batch_tokens:
        def size(d):
            n = packed_size(tokens[d], stage.micro_batch_tokens, max(1, share))
            return n * tokens[d], tokens[d], d
        best = max(draws, key=size)
        return best, packed_size(tokens[best], stage.micro_batch_tokens, max(1, share)), tokens[best]
    best = max(draws, key=lambda d: (tokens[d], d))
    return best, 0, tokens[best]


def dit_batch(cfg: Config, stage: CurriculumStage, micro: int, draw: tuple[int, int],
              device: torch.device | str = META, seed: int = 0):
    """A training micro-batch of `micro` samples of `draw` as the trainer builds it (train/sequences.py
    make_batch), with random latents and text of the profile's sizes on `device`: (TrainBatch, TextCondition,
    full latent size)."""
    T, h, w = latent_shape(cfg, stage)
    D, P = text_dims(cfg)
    L = cfg.text_encoder.max_tokens
    dev = torch.device(device)
    g = device_generator(seed, dev)
    if dev.type == "meta":
        lat = torch.empty(micro, cfg.vae.latent_channels, T, h, w, device=dev)
        text = TextCondition(torch.empty(micro, L, D, device=dev), torch.ones(micro, L, dtype=torch.bool, device=dev),
                             torch.empty(micro, P, device=dev))
    else:
        lat = torch.randn(micro, cfg.vae.latent_channels, T, h, w, generator=g, device=dev)
        text = TextCondition(torch.randn(micro, L, D, generator=g, device=dev),
                             torch.ones(micro, L, dtype=torch.bool, device=dev),
                             torch.randn(micro, P, generator=g, device=dev))
    b = make_batch(lat, PyramidSchedule.from_config(cfg.pyramid), cfg.pyramid, g, draw)
    return b, text, (h, w)


def bf16_on(target: str, precision: str) -> bool:
    """Whether a job trains under bf16 autocast: `precision: bf16` on CUDA (train/loop.py make_accelerator)."""
    return precision == "bf16" and target == "cuda"


def dit_census(cfg: Config, stage: CurriculumStage, micro: int, draw: tuple[int, int], target: str,
               kernel: str) -> tuple[Census, torch.nn.Module]:
    """The saved-tensor census of one training forward + loss of the profile's DiT on the meta device, as on
    `target` (cpu|cuda) with attention `kernel` (sdpa|flex)."""
    model = meta_dit(cfg)
    mode = _TargetEmulation(target, kernel, torch.bfloat16 if bf16_on(target, cfg.train.precision) else None)
    before = getattr(model, "attention_kernel", None)
    if before is not None:
        model.attention_kernel = "sdpa"  # a dense mask on meta; the emulation keeps what `kernel` keeps
    try:
        with _MetaOpCache():
            b, text, full = dit_batch(cfg, stage, micro, draw)
            with mode:
                c = census(lambda: flow_matching_loss(model, b, text, full), model,
                           exclude=lambda t: storage_key(t) in mode.copies, replay=True)
    finally:
        if before is not None:
            model.attention_kernel = before
    if kernel == "flex":  # the dense mask only stood in for the block mask
        for li, blocks in enumerate(c.inputs):
            c.inputs[li] = [s - mode.dense_masks for s in blocks]
    return c, model


# --------------------------------------------------------------------------------------------------------------
# Plan rows
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PlanRow:
    """One row of the plan: one curriculum stage of one experiment (or the VAE), per process (GPU)."""

    experiment: str
    stage: str
    micro_batch: int
    tokens: int  # video tokens of the micro-batch (DiT) or pixels per frame x frames (VAE)
    processes: int
    sharding: str
    checkpointing: float
    kernel: str
    precision: str
    states_gb: float
    states: dict[str, float]
    activations_gb: float  # with the configured checkpointing (kept + recompute peak)
    activations_no_ckpt_gb: float
    total_gb: float
    gpu_memory_gb: float | None
    fits: bool | None
    max_micro_batch: int | None  # largest micro-batch that fits at this setting (None: no memory to fit)
    params: int
    note: str = ""
    suggestion: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class _Setting:
    """What a row's memory depends on besides the micro-batch."""

    processes: int
    sharding: str
    ratio: float
    target: str
    kernel: str
    bf16: bool


def _gb(x: float) -> float:
    return round(x / GB, 6)


def fmt_bytes(x: float) -> str:
    """Bytes in GB (10^9) with one decimal, or in MB / kB below 0.1 GB."""
    for unit, size in (("GB", GB), ("MB", 1e6), ("kB", 1e3)):
        if x >= 0.1 * size or unit == "kB":
            return f"{x / size:,.1f} {unit}"
    return f"{x:.0f} B"  # pragma: no cover


class DitStagePlan:
    """The plan of one DiT curriculum stage: states from the meta model, activations measured per micro-batch
    (cached), the linear solve for the largest micro-batch."""

    def __init__(self, cfg: Config, experiment: str, stage: CurriculumStage, setting: _Setting):
        self.cfg, self.experiment, self.stage, self.s = cfg, experiment, stage, setting
        self.share = max(1, stage.batch_size // max(1, setting.processes))
        self.draw, packed, self.sample_tokens = worst_draw(cfg, stage, self.share)
        self.micro = packed or stage.micro_batch_size or self.share
        self.model = meta_dit(cfg)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.block_params = max((sum(p.numel() for p in blk.parameters()) for bl in block_lists(self.model)
                                 for blk in bl), default=0)
        self._cache: dict[int, Census] = {}

    def measure(self, micro: int) -> Census:
        if micro not in self._cache:
            s = self.s
            key = (_census_key(self.cfg, self.stage, self.draw), micro, s.target, s.kernel, s.bf16)
            if key not in _CENSUS:
                _CENSUS[key] = dit_census(self.cfg, self.stage, micro, self.draw, s.target, s.kernel)[0]
            self._cache[micro] = _CENSUS[key]
        return self._cache[micro]

    def states(self, sharding: str | None = None) -> dict[str, float]:
        s = self.s
        return states(self.params, self.block_params, s.processes, sharding or s.sharding, s.bf16)

    def activation_bytes(self, micro: int, ratio: float | None = None, measure: bool = False) -> float:
        """Activation bytes at `micro` samples: measured (the stage's own micro-batch, or `measure`), else on the
        line through the measurements at 1 sample and at the stage's micro-batch (activations are linear in
        it)."""
        r = self.s.ratio if ratio is None else ratio

        def at(m: int) -> int:
            kept, peak = self.measure(m).activations(r)
            return kept + peak

        if measure or micro in self._cache:
            return at(micro)
        a, b = 1, self.micro if self.micro > 1 else 2
        return at(a) + (micro - a) * (at(b) - at(a)) / (b - a)

    def total(self, micro: int, ratio: float | None = None, sharding: str | None = None,
              measure: bool = False) -> float:
        return sum(self.states(sharding).values()) + self.activation_bytes(micro, ratio, measure)


def max_micro_batch(total: Callable[..., float], memory: float, limit: int = 1 << 16) -> int:
    """The largest micro-batch m <= `limit` with total(m) <= memory (0 if not even one sample fits). `total(m)`
    is linear in m: solved on that line, then verified by a measurement (`total(m, measure=True)`), stepping down
    while the measurement does not fit."""
    if total(1, measure=True) > memory:
        return 0
    t1, t2 = total(1), total(2)
    slope = max(t2 - t1, 1.0)
    m = max(1, min(limit, int((memory - t1) // slope) + 1))
    while m > 1 and total(m, measure=True) > memory:
        m -= 1
    return m


def valid_micro_batches(batch_size: int, processes: int) -> list[int]:
    """The micro-batch sizes the trainer accepts for a global batch over `processes` processes (train/loop.py
    TrainingJob: batch_size / micro_batch_size micro-batches, a multiple of the process count), largest first."""
    return [m for m in range(batch_size, 0, -1)
            if batch_size % m == 0 and (batch_size // m) % max(1, processes) == 0]


def _kernel(cfg: Config, target: str) -> str:
    kernel = getattr(cfg.model, "attention_kernel", "auto")
    return resolve_kernel(kernel, "cuda" if target == "cuda" else "cpu")


def _suggest(fits_with: list[str]) -> str:
    return " or ".join(fits_with)


def stage_plan(cfg: Config, experiment: str, stage: CurriculumStage, processes: int, target: str) -> DitStagePlan:
    """The plan of `experiment`'s curriculum `stage` at the config's sharding, checkpointing, attention kernel
    and precision on `processes` processes of device type `target`."""
    s = _Setting(processes, cfg.compute.sharding, cfg.train.activation_checkpointing, target,
                 _kernel(cfg, target), bf16_on(target, cfg.train.precision))
    return DitStagePlan(cfg, experiment, stage, s)


def plan_dit_stage(cfg: Config, experiment: str, stage: CurriculumStage, processes: int, memory: float | None,
                   target: str) -> PlanRow:
    """The plan row of `experiment`'s curriculum `stage` on `processes` processes, against `memory` bytes per
    device (None: no verdict)."""
    p = stage_plan(cfg, experiment, stage, processes, target)
    s = p.s
    micro = p.micro
    st = p.states()
    kept, peak = p.measure(micro).activations(s.ratio)
    act_off = p.measure(micro).total()
    total = sum(st.values()) + kept + peak
    notes = []
    if stage.micro_batch_tokens == 0:
        if stage.batch_size % micro or (stage.batch_size // micro) % max(1, processes):
            notes.append(f"batch_size {stage.batch_size} / micro-batch {micro} is not a multiple of "
                         f"{processes} processes (train/loop.py)")
    elif stage.batch_size % max(1, processes):
        notes.append(f"batch_size {stage.batch_size} cannot be split among {processes} processes (train/dit.py)")
    fits = None if memory is None else total <= memory
    best = None if memory is None else max_micro_batch(p.total, memory, stage.batch_size)
    suggestion = ""
    if fits is False:
        suggestion = _suggest(_fixes(p, micro, memory, stage, processes, best or 0))
        if best == 0 and not _any_setting_fits(p, memory):
            notes.append(f"cannot fit {fmt_bytes(memory)} on any setting: one sample of {p.sample_tokens:,} video "
                         "tokens needs more even with every block checkpointed and full sharding")
    tokens = micro * p.sample_tokens
    return PlanRow(experiment, stage.name, micro, tokens, processes, s.sharding, s.ratio, s.kernel,
                   "bf16" if s.bf16 else "fp32", _gb(sum(st.values())), {k: _gb(v) for k, v in st.items()},
                   _gb(kept + peak), _gb(act_off), _gb(total), None if memory is None else round(memory / GB, 3),
                   fits, best, p.params, "; ".join(notes), suggestion)


def _any_setting_fits(p: DitStagePlan, memory: float) -> bool:
    return p.total(1, 1.0, "full", measure=True) <= memory


def _ratios(p: DitStagePlan) -> list[float]:
    """Checkpointing ratios above the current one, in steps of one block of the longest block list."""
    n = max((len(bl) for bl in block_lists(p.model)), default=0)
    return [r for r in (round(k / n, 4) for k in range(1, n + 1)) if r > p.s.ratio] if n else []


def _fixes(p: DitStagePlan, micro: int, memory: float, stage: CurriculumStage, processes: int,
           best: int) -> list[str]:
    """Settings that would make a stage fit: each changing one thing (a smaller micro-batch the trainer accepts,
    at most `best`, the largest that fits; a checkpointing ratio; a sharding), or else the first combination
    that fits (largest micro-batch, least sharding, smallest ratio), verified by a measurement."""
    out = []
    idx = next((i for i, s in enumerate(p.cfg.train.curriculum) if s.name == stage.name), 0)
    where = f"in train.curriculum[{idx}] ({stage.name})"
    if stage.micro_batch_tokens:
        micros = [best] if best else []
        say = lambda m: f"micro_batch_tokens {m * p.sample_tokens} {where}"  # noqa: E731
    else:
        micros = [m for m in valid_micro_batches(stage.batch_size, processes) if m <= micro]
        say = lambda m: f"micro_batch_size {m} {where}"  # noqa: E731
    m = next((m for m in micros if m <= best and m < micro), 0)
    if m:
        out.append(say(m))
    r = next((r for r in _ratios(p) if p.total(micro, r) <= memory), None)
    if r is not None:
        out.append(f"--set train.activation_checkpointing={r:g}")
    sh = next((sh for sh in SHARDINGS[SHARDINGS.index(p.s.sharding) + 1:] if p.total(micro, None, sh) <= memory),
              None)
    if sh is not None:
        out.append(f"--set compute.sharding={sh}")
    if out:
        return out
    for m in micros:
        for sh in SHARDINGS[SHARDINGS.index(p.s.sharding):]:
            for r in [p.s.ratio, *_ratios(p)]:
                if p.total(m, r, sh) <= memory and p.total(m, r, sh, measure=True) <= memory:
                    parts = ([say(m)] if m != micro else []) + \
                            ([f"--set train.activation_checkpointing={r:g}"] if r != p.s.ratio else []) + \
                            ([f"--set compute.sharding={sh}"] if sh != p.s.sharding else [])
                    return [" with ".join(parts)]
    return out


# --------------------------------------------------------------------------------------------------------------
# The VAE
# --------------------------------------------------------------------------------------------------------------


def vae_processes(cfg: Config, processes: int) -> int:
    """Processes of the VAE training job: it runs on one node (workflow.py training_resources), so at most the
    node's processes (compute.processes_per_node, else one per GPU)."""
    per_node = cfg.compute.processes_per_node or max(1, cfg.compute.gpus_per_job)
    return max(1, min(processes, per_node))


def _meta_vae(cfg: Config):
    """The VAE, its loss (LPIPS architecture without weights) and discriminator on meta."""
    lc = cfg.vae.loss
    with torch.device(META):
        vae = build_vae(cfg).train()
        loss = VAELoss(dataclasses.replace(lc, lpips_weight=0.0))
        loss.cfg = lc
        if lc.lpips_weight > 0:
            loss.lpips = LPIPS(None)
    return vae, loss


def plan_vae(cfg: Config, processes: int, memory: float | None, target: str) -> PlanRow:
    """The plan row of the VAE's training job: the generator step (VAE forward + generator loss, the discriminator
    in it after vae.loss.gan_start_step) or the discriminator's own step, whichever keeps more."""
    tc, v = cfg.vae.train, cfg.vae
    n = vae_processes(cfg, processes)
    micro = tc.micro_batch_size or max(1, tc.batch_size // n)
    frames = v.train_frames or cfg.data.frames
    H, W = cfg.data.height, cfg.data.width
    if v.train_crop:  # a side longer than the frame's takes the whole side (train/vae.py random_crops)
        H, W = min(v.train_crop, H), min(v.train_crop, W)
    bf16 = bf16_on(target, tc.precision)
    vae, loss = _meta_vae(cfg)
    params = sum(p.numel() for p in vae.parameters())
    disc = sum(p.numel() for p in loss.disc.parameters()) if loss.disc is not None else 0
    frozen = sum(p.numel() for p in loss.lpips.parameters()) if loss.lpips is not None else 0
    step = max(0, cfg.vae.loss.gan_start_step)

    def measure(m: int) -> tuple[int, int]:
        x = torch.empty(m, 3, frames, H, W, device=META)
        g = device_generator(0, META)
        mode = _TargetEmulation(target, "sdpa", torch.bfloat16 if bf16 else None)
        out: dict[str, Any] = {}

        def gen():
            recon, mean, logvar = vae(x, generator=g)
            out["recon"] = recon
            return loss.generator_loss(x, recon.float(), mean.float(), logvar.float(), step)

        with _MetaOpCache(), mode:
            others = tuple(m for m in (loss.lpips, loss.disc) if m is not None)
            c_gen = census(gen, vae, exclude=lambda t: storage_key(t) in mode.copies, frozen=others)
            c_disc = census(lambda: loss.discriminator_loss(x, out["recon"], step), loss.disc,
                            exclude=lambda t: storage_key(t) in mode.copies) if loss.disc is not None else Census()
        alive = x.untyped_storage().nbytes() + out["recon"].untyped_storage().nbytes()
        return c_gen.total(), c_disc.total() + alive

    st = states(params, 0, n, cfg.compute.sharding, bf16, ema=tc.ema_decay > 0, extra_trained=disc, frozen=frozen)
    cache: dict[int, int] = {}

    def act(m: int) -> int:
        if m not in cache:
            cache[m] = max(measure(m))
        return cache[m]

    a = act(micro)
    total = sum(st.values()) + a
    fits = None if memory is None else total <= memory
    best = None if memory is None else max_micro_batch(lambda m, measure=False: sum(st.values()) + act(m), memory,
                                                       tc.batch_size)
    suggestion, note = "", ""
    if fits is False:
        fixes = [f"vae.train.micro_batch_size={m}" for m in valid_micro_batches(tc.batch_size, n)
                 if m < micro and m <= (best or 0)][:1]
        suggestion = _suggest([f"--set {f}" for f in fixes])
        if not best:
            note = (f"one clip of {frames} frames at {H}x{W} keeps {fmt_bytes(act(1))} of activations: it cannot "
                    f"fit {fmt_bytes(memory)} on any micro-batch (fewer frames per training clip, vae.train_frames, "
                    "or training crops, vae.train_crop)")
    return PlanRow("vae", "vae", micro, micro * frames * H * W, n, cfg.compute.sharding,
                   0.0, "-", "bf16" if bf16 else "fp32", _gb(sum(st.values())), {k: _gb(v) for k, v in st.items()},
                   _gb(a), _gb(a), _gb(total), None if memory is None else round(memory / GB, 3), fits, best,
                   params, note, suggestion)


# --------------------------------------------------------------------------------------------------------------
# A profile, a job
# --------------------------------------------------------------------------------------------------------------


def job_processes(cfg: Config) -> int:
    """Processes of a DiT training job of the profile: nodes x processes per node (one per GPU, at least one)."""
    c = cfg.compute
    return max(1, c.nodes) * (c.processes_per_node or max(1, c.gpus_per_job))


def default_target(cfg: Config) -> str:
    """The device type a profile's jobs train on: compute.device, or for `auto` CUDA when the profile asks for
    GPUs or this machine has one, else the CPU."""
    if cfg.compute.device in ("cpu", "cuda"):
        return cfg.compute.device
    return "cuda" if cfg.compute.gpus_per_job > 0 or torch.cuda.is_available() else "cpu"


def device_memory(cfg: Config, device: torch.device | str | None = None) -> float | None:
    """Bytes of memory of the job's device: compute.gpu_memory_gb when stated, else the CUDA device's total
    memory, else None (no check on a CPU)."""
    if cfg.compute.gpu_memory_gb > 0:
        return cfg.compute.gpu_memory_gb * GB
    if device is not None and torch.device(device).type == "cuda":
        dev = torch.device(device)
        return float(torch.cuda.get_device_properties(dev.index if dev.index is not None else 0).total_memory)
    return None


def plan_profile(cfg: Config, experiments: list[str] | None = None, processes: int | None = None,
                 memory: float | None = None, target: str | None = None, vae: bool = True) -> list[PlanRow]:
    """The plan rows of a profile: every curriculum stage of each training experiment (default: the profile's
    `experiments` that train), then the VAE."""
    processes = processes or job_processes(cfg)
    target = target or default_target(cfg)
    names = experiments or [e for e in selected_experiments(cfg.experiments) if e in training_experiments()]
    rows = []
    for e in names:
        ecfg = for_experiment(cfg, e)
        for st in ecfg.train.curriculum:
            rows.append(plan_dit_stage(ecfg, e, st, processes, memory, target))
    if vae and not cfg.release:  # a fine-tuning run encodes with the release's VAE and trains none
        rows.append(plan_vae(cfg, processes, memory, target))
    return rows


IGNORE_OPTION = "--ignore-memory-plan"  # the training commands' override of check_job


class MemoryPlanError(ConfigError):
    """A training job whose plan does not fit its device's memory (the message is one line)."""


def world_size() -> int:
    """Processes of the job this process belongs to (accelerate launch / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_job(cfg: Config, kind: str, experiment: str | None = None, stage_name: str | None = None,
              device: torch.device | str | None = None, override_hint: str = IGNORE_OPTION) -> PlanRow | None:
    """Before a training job allocates anything on its device: its plan against the device's memory
    (device_memory). Raises MemoryPlanError with one line (stage, micro-batch, need, have, the settings that would
    fit, how to override) when it does not fit; returns the row (None when there is no memory to check against or
    compute.memory_check is off)."""
    if not cfg.compute.memory_check:
        return None
    device = torch.device(device) if device is not None else config_device(cfg)
    memory = device_memory(cfg, device)
    if memory is None:
        return None
    target = "cuda" if device.type == "cuda" else "cpu"
    n = world_size()
    if kind == "vae":
        row = plan_vae(cfg, n, memory, target)
    else:
        st = next((s for s in cfg.train.curriculum if s.name == stage_name), None)
        if st is None:
            raise ConfigError(f"--stage {stage_name!r} is not a stage of train.curriculum "
                              f"({[s.name for s in cfg.train.curriculum]})")
        row = plan_dit_stage(cfg, experiment or "-", st, n, memory, target)
    if row.fits:
        return row
    where = f"{row.experiment}/{row.stage}" if kind != "vae" else "vae"
    fix = f"fits with {row.suggestion}" if row.suggestion else (row.note or "no setting in reach fits")
    msg = (f"memory plan: {where} at micro-batch {row.micro_batch} needs {fmt_bytes(row.total_gb * GB)} per device "
           f"(states {fmt_bytes(row.states_gb * GB)} + activations {fmt_bytes(row.activations_gb * GB)}; "
           f"{n} process(es), sharding {row.sharding}, checkpointing {row.checkpointing:g}), has "
           f"{fmt_bytes(memory)}; {fix}; {override_hint} or --set compute.memory_check=false runs it anyway")
    raise MemoryPlanError(msg)


__all__ = ["BYTES", "GB", "IGNORE_OPTION", "Census", "DitStagePlan", "MemoryPlanError", "PlanRow", "StateBytes",
           "block_lists", "census", "check_job", "checkpointed_count", "default_target", "device_memory",
           "dit_batch", "dit_census", "fmt_bytes", "job_processes", "max_micro_batch", "meta_dit", "plan_dit_stage",
           "plan_profile", "plan_vae", "stage_plan", "states", "text_dims", "valid_micro_batches", "worst_draw"]
