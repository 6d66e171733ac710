"""What every velocity model of the suite is to the sampler and to the checkpoint loader (docs/method.md §3-§4).

`DiTModel` is the common base of this suite's MM-DiT (`dit.PyramidDiT`), the authors' released one
(`official.OfficialPyramidDiT`) and any later released model: a diffusers ModelMixin/ConfigMixin (save_pretrained /
from_pretrained, config.json naming the class in `_class_name`) whose forward is

    forward(history, current, timestep, tokens, text_mask, pooled, full_size, context=None, plan=None) -> velocity

(history: list of (B, C, h_i, w_i) latent frames, oldest first; current: (B, C, T, h, w); timestep: (B,) in
[0, 1000]; tokens (B, L, D_txt), text_mask (B, L), pooled (B, P); full_size: (H, W) of the full-resolution
latent). Optional, read by the sampler where present: `plan(...)` (what a forward derives from shapes alone, made
once per stage) and, where `kv_cache_exact` is True, `encode_context(...)` (the history KV cache).

A new model is a subclass in its own file, listed in `registry.DIT_CLASSES` so that `models.load_dit` finds it by
its config's `_class_name`.

Activation checkpointing (`train.activation_checkpointing`, a training-time setting the trainer switches on with
`set_activation_checkpointing`; not saved in config.json): the first `checkpointed_blocks(n, ratio)` blocks of each
of the model's block lists (`block_lists`) run under non-reentrant `torch.utils.checkpoint`, so their activations
are recomputed in backward instead of kept. The same arithmetic, so the same loss and gradients
(tests/test_activation_checkpointing.py). `checkpointed_blocks` is the one rule, shared with the memory plan.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin

from pyramid_repro.models.attention import DEFAULT_KERNEL


def checkpointed_blocks(n_blocks: int, ratio: float) -> int:
    """How many of a block list's `n_blocks` transformer blocks activation checkpointing recomputes at `ratio` (the
    share of blocks, train.activation_checkpointing): the first round(ratio * n_blocks), rounded half up (0.75 of
    24 blocks: 18; 0.5 of 3: 2). The rule of the models (DiTModel.run_block) and of the memory plan."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"activation checkpointing ratio {ratio}: the share of blocks must lie in [0, 1]")
    return min(n_blocks, math.floor(ratio * n_blocks + 0.5))


class DiTModel(ModelMixin, ConfigMixin):
    """Base of the suite's velocity models (see the module docstring for the contract)."""

    #: share of each block list's blocks run under activation checkpointing (module docstring); a training-time
    #: setting (`set_activation_checkpointing`), not part of the saved config
    activation_checkpointing: float = 0.0

    #: config.json keys an earlier version of the class wrote and that configure nothing now; dropped when a
    #: checkpoint is loaded, so that folders written before the key went away load as they did (and silently)
    legacy_config_keys: tuple[str, ...] = ()

    #: the attention kernel of the forward passes (models/attention.py: auto, sdpa or flex), the one default of
    #: every model class; whatever builds or loads a model for a config sets the config's (attention.set_kernel).
    #: A runtime choice, not saved in config.json: both kernels compute the same attention
    attention_kernel: str = DEFAULT_KERNEL

    @property
    def kv_cache_exact(self) -> bool:
        """Whether the history KV cache (`encode_context`, then forward with `context=`) gives this model's own
        result to float tolerance. False unless a model says otherwise."""
        return False

    def block_lists(self) -> list[nn.ModuleList]:
        """The model's lists of transformer blocks (what activation checkpointing and sharding act on, one list
        at a time): `blocks` by default; a model with more (miniFLUX's single-stream blocks) lists them all."""
        return [self.blocks]

    def set_activation_checkpointing(self, ratio: float) -> None:
        """Checkpoint the first `checkpointed_blocks(len(list), ratio)` blocks of each block list (0 = off)."""
        checkpointed_blocks(0, ratio)  # the range check
        self.activation_checkpointing = float(ratio)

    def run_block(self, block: nn.Module, index: int, n_blocks: int, *args):
        """`block(*args)`, the `index`-th of a list of `n_blocks`: under non-reentrant activation checkpointing
        when it is among the list's checkpointed blocks and autograd records (training); plainly otherwise."""
        ratio = self.activation_checkpointing
        if ratio and torch.is_grad_enabled() and index < checkpointed_blocks(n_blocks, ratio):
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    @classmethod
    def check_legacy_config(cls, config: dict) -> None:
        """Raise if a config.json read for this class was written for another model (the subclass says when)."""

    @classmethod
    def load_config(cls, *args, **kwargs):
        """ConfigMixin.load_config, with this class's `legacy_config_keys` checked and dropped."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        cls.check_legacy_config(config)
        for key in cls.legacy_config_keys:
            config.pop(key, None)
        return loaded


class StateTaker:
    """The strict converters' bookkeeping (release <-> suite state dicts): `take(key)` hands out each tensor once,
    a KeyError naming the key when it is not there (`missing` says what was expected, with {key}); `done()` is a
    KeyError naming what was never taken (`leftover` completes "<n> weights ...")."""

    def __init__(self, state: dict[str, torch.Tensor], missing: str, leftover: str):
        self.left, self.missing, self.leftover = dict(state), missing, leftover

    def __call__(self, key: str) -> torch.Tensor:
        if key not in self.left:
            raise KeyError(self.missing.format(key=repr(key)))
        return self.left.pop(key)

    def __contains__(self, key: str) -> bool:
        return key in self.left

    def done(self) -> None:
        if self.left:
            raise KeyError(f"{len(self.left)} weights {self.leftover}: {sorted(self.left)[:8]}")


def read_release_folder(folder: str | Path, what: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, every tensor of its *.safetensors files) of a released transformer folder, for the strict
    converters of the authors' models; `what` names the expected folder in the errors."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (expected {what})")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return json.loads(cfg_file.read_text()), state
