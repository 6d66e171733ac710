"""Joint text + video attention under the blockwise causal mask (docs/method.md §3), with two kernels.

* `sdpa`: PyTorch's scaled_dot_product_attention with the dense boolean mask of `positions.attention_mask`. It
  computes every query-key pair and discards the hidden ones; the reference, and the CPU path.
* `flex`: FlexAttention with a block mask built from the same rule (`mask_mod`), so the kernel skips the blocks
  the mask hides (later frames under the causal mask, padded text keys). On CUDA it is compiled; measured on one
  H200 at 15,488 tokens (stage 3, last frame): dense-mask SDPA 20.5 ms, unmasked SDPA 10.6 ms, FlexAttention
  10.5 ms forward + backward.

`auto` (`DEFAULT_KERNEL`, what every model class starts with: `base.DiTModel.attention_kernel`) takes `flex` on
CUDA when this PyTorch has FlexAttention, `sdpa` elsewhere. If the compiled kernel fails on a GPU (an unsupported
head size, a compiler error), the call warns once, falls back to the dense mask, and `auto` stays on `sdpa` for the
rest of the process. Both kernels see the same mask:
tests/test_attention.py checks the block mask against the dense one and the model's outputs under both kernels on
the CPU, where FlexAttention runs uncompiled and forward only (PyTorch has no CPU backward for it).

The kernel is the config's `model.attention_kernel`, applied by whatever builds or loads a DiT for a config
(`dit.build_dit`, `registry.load_dit(..., kernel=)`, eval/release.py `load_release(..., kernel=)`) through
`set_kernel`. It is a runtime choice: not saved in a checkpoint's config.json (a folder loads the same whichever
kernel wrote it) and not part of a stage's checkpoint fingerprint (tree.py `COMPUTES_THE_SAME`).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from pyramid_repro.models.positions import attention_mask

KERNELS = ("auto", "sdpa", "flex")
DEFAULT_KERNEL = "auto"  # every model class's kernel until a config sets another (base.DiTModel.attention_kernel)

try:  # PyTorch >= 2.5
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older PyTorch: the dense path only
    BlockMask = create_block_mask = flex_attention = None


_FLEX_FAILED: list[str] = []  # why the compiled kernel failed in this process, if it did


def resolve_kernel(kernel: str, device: torch.device | str) -> str:
    """The kernel a forward pass on `device` uses: `auto` -> `flex` on CUDA (when available and it has not failed
    in this process), else `sdpa`."""
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel {kernel!r}: expected one of {', '.join(KERNELS)}")
    if kernel == "flex" and flex_attention is None:
        raise RuntimeError("attention kernel 'flex' needs PyTorch >= 2.5 (torch.nn.attention.flex_attention)")
    if kernel == "auto":
        usable = flex_attention is not None and not _FLEX_FAILED
        return "flex" if torch.device(device).type == "cuda" and usable else "sdpa"
    return kernel


def set_kernel(model, kernel: str):
    """`model` (a DiT, models/base.py) with its attention kernel set to `kernel` (one of KERNELS); returns it."""
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel {kernel!r}: expected one of {', '.join(KERNELS)} "
                         "(model.attention_kernel)")
    model.attention_kernel = kernel
    return model


@dataclass(frozen=True)
class MaskSpec:
    """The attention mask of one forward pass, as data: keys are L text tokens then the video tokens whose frame
    indices are `frame_of_token`; the queries are the last `n_queries` keys (all of them in a full forward pass,
    the current frame's tokens when text and history come from the KV cache)."""

    frame_of_token: torch.Tensor  # (N_video,) frame index of each video key
    text_valid: torch.Tensor  # (B, L) False for padded text tokens
    causal: bool
    n_queries: int
    text_sees_first_frame: bool = False  # the authors' model (positions.attention_mask)

    @property
    def n_keys(self) -> int:
        return self.text_valid.shape[1] + self.frame_of_token.shape[0]

    def dense(self) -> torch.Tensor:
        """(B, 1, n_queries, n_keys) boolean mask, True = may attend (the sdpa kernel's and the reference)."""
        full = attention_mask(self.frame_of_token, self.text_valid, self.causal, self.text_sees_first_frame)
        return full[:, :, self.n_keys - self.n_queries:]

    def mask_mod(self):
        """FlexAttention's mask_mod(b, h, q_idx, kv_idx) -> bool: the rule of `positions.attention_mask` on token
        indices (a video token sees valid text and its own and earlier frames, or every frame when not causal;
        text sees valid text only; every token sees itself, so a padded text query is never left without keys)."""
        L, offset, causal = self.text_valid.shape[1], self.n_keys - self.n_queries, self.causal
        first = self.text_sees_first_frame
        dev = self.frame_of_token.device
        # text tokens get frame -1: below every video frame
        frames = torch.cat([torch.full((L,), -1, dtype=torch.long, device=dev), self.frame_of_token.long()])
        valid = torch.cat([self.text_valid.bool(),
                           torch.ones(self.text_valid.shape[0], len(self.frame_of_token), dtype=torch.bool,
                                      device=dev)], dim=1)

        def mod(b, h, q_idx, kv_idx):
            q = q_idx + offset
            key_is_text = kv_idx < L
            later = frames[kv_idx] <= frames[q] if causal else kv_idx >= 0
            text_query_sees = key_is_text | (frames[kv_idx] == 0) if first else key_is_text
            sees = torch.where(q < L, text_query_sees, key_is_text | later)
            return (sees & valid[b, kv_idx]) | (q == kv_idx)

        return mod

    def block_mask(self, block_size: int = 128):
        """The FlexAttention BlockMask of this mask, on the mask's device."""
        if create_block_mask is None:
            raise RuntimeError("FlexAttention needs PyTorch >= 2.5")
        B = self.text_valid.shape[0]
        return create_block_mask(self.mask_mod(), B, None, self.n_queries, self.n_keys,
                                 device=self.frame_of_token.device, BLOCK_SIZE=block_size)

    def build(self, kernel: str):
        """What `attend` takes for `kernel` (`sdpa` or `flex`): the dense mask or a FlexMask."""
        return FlexMask(self, self.block_mask()) if kernel == "flex" else self.dense()


@dataclass
class FlexMask:
    """A block mask with the rule it came from (the dense mask is built from it only if the kernel fails)."""

    spec: MaskSpec
    block: object
    _dense: torch.Tensor | None = field(default=None, repr=False)

    def dense(self) -> torch.Tensor:
        if self._dense is None:
            self._dense = self.spec.dense()
        return self._dense


@functools.cache
def _compiled_flex():
    # dynamic shapes: one kernel for every sequence length. The pyramid trains on dozens of lengths (stage x
    # frame x history), and a kernel per length would recompile at every new one and, past dynamo's cache limit
    # (8), fall back to the unfused reference
    return torch.compile(flex_attention, dynamic=True)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """Attention of (B, heads, Nq, d) queries over (B, heads, Nk, d) keys/values under `mask` (MaskSpec.build):
    a dense boolean mask goes to SDPA, a FlexMask to FlexAttention (compiled on CUDA, eager elsewhere)."""
    if isinstance(mask, FlexMask):
        if not _FLEX_FAILED:
            try:
                fn = _compiled_flex() if q.is_cuda else flex_attention
                return fn(q, k, v, block_mask=mask.block)
            except Exception as err:  # noqa: BLE001 - any compiler/kernel failure: fall back, say why once
                _FLEX_FAILED.append(f"{type(err).__name__}: {err}")
                warnings.warn(f"FlexAttention failed on {q.device.type} ({_FLEX_FAILED[0][:300]}); using "
                              "dense-mask attention (scaled_dot_product_attention) for the rest of this process",
                              stacklevel=2)
        mask = mask.dense()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
