"""A tiny stand-in for the text half of the authors' release folder (their SD3-based checkpoint): text_encoder/
(CLIP-L), text_encoder_2/ (CLIP-G), text_encoder_3/ (T5 encoder) and tokenizer/, tokenizer_2/, tokenizer_3/, written
offline with random weights by the same transformers classes, so ClipT5Encoder.from_release can be tested without
the 10 GB of real weights. Imported by tests (not a test module itself)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CLIP_MAX_LENGTH = 77  # CLIP's context length, model_max_length of the release's CLIP tokenizers
# words the fake vocabularies know as whole tokens; anything else falls back to characters (CLIP: bytes)
WORDS = ("a", "red", "blue", "green", "cat", "dog", "square", "circle", "moving", "left", "right", "the", "on", "sky")


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes that byte-level BPE (GPT-2, CLIP) uses, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(rest))]


def _write_clip_tokenizer(folder: Path, pad_token: str) -> int:
    """A CLIP BPE vocabulary as CLIP lays it out (bytes, bytes + "</w>", merges, then the two specials last) with
    merges that spell WORDS; returns the vocabulary size."""
    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges: list[str] = []
    for word in WORDS:
        # left-to-right merges: w, wo, wor, ..., word</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        prefix = pieces[0]
        for p in pieces[1:]:
            merge = f"{prefix} {p}"
            prefix += p
            if merge not in merges:
                merges.append(merge)
                vocab.setdefault(prefix, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": CLIP_MAX_LENGTH, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": pad_token}), encoding="utf-8")
    return len(vocab)


def _write_t5_tokenizer(folder: Path) -> int:
    """A T5-style Unigram tokenizer (pad id 0, `</s>` id 1 appended to every sequence, unk id 2, Metaspace "▁"
    word starts) saved as tokenizer.json; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -3.0 - 0.1 * i) for i, w in enumerate(WORDS)]
    pieces += [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                       special_tokens=[("</s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    # extra_ids=0: no sentinel tokens, so the tokenizer's and the model's vocabulary sizes agree
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "model_max_length": 512, "extra_ids": 0, "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>"}), encoding="utf-8")
    return len(pieces)


def write_fake_text_encoders(root: Path, t5_dim: int = 32, clip_l_proj: int = 8, clip_g_proj: int = 12,
                             seed: int = 0) -> Path:
    """Write tiny random CLIP-L / CLIP-G (CLIPTextModelWithProjection, projection dims clip_l_proj / clip_g_proj),
    a T5EncoderModel (d_model t5_dim) and their tokenizers into the release layout under `root`; returns `root`.
    The CLIP-G tokenizer pads with "!" and the CLIP-L one with "<|endoftext|>", as in the release."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    root = Path(root)
    v_clip = _write_clip_tokenizer(root / "tokenizer", "<|endoftext|>")
    _write_clip_tokenizer(root / "tokenizer_2", "!")
    v_t5 = _write_t5_tokenizer(root / "tokenizer_3")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, hidden, proj in (("text_encoder", 16, clip_l_proj), ("text_encoder_2", 24, clip_g_proj)):
            # eos = the real "<|endoftext|>" id (the last one), so the pooled token is found by id
            cfg = CLIPTextConfig(vocab_size=v_clip, hidden_size=hidden, intermediate_size=2 * hidden,
                                 num_hidden_layers=2, num_attention_heads=2, projection_dim=proj,
                                 max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=v_clip - 2,
                                 eos_token_id=v_clip - 1, pad_token_id=v_clip - 1 if name == "text_encoder" else 0)
            CLIPTextModelWithProjection(cfg).save_pretrained(root / name)
        cfg = T5Config(vocab_size=v_t5, d_model=t5_dim, d_kv=8, d_ff=2 * t5_dim, num_layers=2, num_heads=2,
                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        T5EncoderModel(cfg).save_pretrained(root / "text_encoder_3")
    return root
