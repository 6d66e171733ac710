"""ClipT5Encoder.from_release on a tiny fake of the authors' release folder (tests/release_fake_text.py): shapes,
T5 mask, pooled [CLIP-L, CLIP-G] order, truncation, missing folders, determinism (docs/method.md §4)."""

from __future__ import annotations

import pytest
import torch
from release_fake_text import CLIP_MAX_LENGTH, write_fake_text_encoders

from pyramid_repro.config import ConfigError
from pyramid_repro.models.text import RELEASE_FOLDERS, ClipT5Encoder

T5_DIM, L_PROJ, G_PROJ, MAX_TOKENS = 32, 8, 12, 16
PROMPTS = ["a red cat", "the blue square moving left on the sky", "", "zebra!"]
# 60 words: past MAX_TOKENS T5 tokens and past CLIP's 77 tokens (each word is 1 CLIP token, "?" another)
LONG = " ".join(["a red cat ?"] * 30)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_fake_text_encoders(tmp_path_factory.mktemp("release") / "pyramid-flow-sd3", T5_DIM, L_PROJ, G_PROJ)


@pytest.fixture(scope="module")
def enc(release):
    return ClipT5Encoder.from_release(release, max_tokens=MAX_TOKENS)


def test_shapes_dims_and_identity(release, enc):
    tokens, mask, pooled = enc.encode(PROMPTS)
    assert (enc.token_dim, enc.pooled_dim, enc.clip_max_length) == (T5_DIM, L_PROJ + G_PROJ, CLIP_MAX_LENGTH)
    assert tokens.shape == (4, MAX_TOKENS, T5_DIM) and mask.shape == (4, MAX_TOKENS) and mask.dtype == torch.bool
    assert pooled.shape == (4, L_PROJ + G_PROJ) and tokens.dtype == pooled.dtype == torch.float32
    assert "pyramid-flow-sd3" in enc.identity and str(MAX_TOKENS) in enc.identity
    full = ClipT5Encoder.from_release(release)  # the paper's 128 T5 tokens by default
    assert full.encode(["a cat"])[0].shape == (1, 128, T5_DIM) and full.identity != enc.identity


def test_mask_marks_exactly_the_prompt_tokens_and_eos(enc):
    _, mask, _ = enc.encode(PROMPTS)
    ids = enc.tok_t5(PROMPTS, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                     return_tensors="pt").input_ids
    assert torch.equal(mask, ids != enc.tok_t5.pad_token_id)
    for i, p in enumerate(PROMPTS):  # T5 appends </s>: the empty prompt keeps one visible token
        n = len(enc.tok_t5(p).input_ids)
        assert mask[i, :n].all() and not mask[i, n:].any() and ids[i, n - 1] == enc.tok_t5.eos_token_id
    assert mask[2].sum() == 1


def test_outputs_equal_the_models_run_by_hand_in_release_order(release, enc):
    """Pooled = [CLIP-L text_embeds, CLIP-G text_embeds] from each CLIP's own tokenizer at 77 tokens (ids only);
    tokens = T5 last hidden states with the attention mask passed."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    tokens, _, pooled = enc.encode(PROMPTS)
    ref = []
    for tok_dir, model_dir in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        tok = CLIPTokenizer.from_pretrained(release / tok_dir, local_files_only=True)
        model = CLIPTextModelWithProjection.from_pretrained(release / model_dir, local_files_only=True).eval()
        ids = tok(PROMPTS, padding="max_length", max_length=CLIP_MAX_LENGTH, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            ref.append(model(ids).text_embeds)
    assert ref[0].shape[1] == L_PROJ and ref[1].shape[1] == G_PROJ
    torch.testing.assert_close(pooled, torch.cat(ref, dim=-1), rtol=0, atol=1e-6)
    tok = T5TokenizerFast.from_pretrained(release / "tokenizer_3", local_files_only=True)
    t = tok(PROMPTS, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    t5 = T5EncoderModel.from_pretrained(release / "text_encoder_3", local_files_only=True).eval()
    with torch.no_grad():
        ref_tokens = t5(input_ids=t.input_ids, attention_mask=t.attention_mask).last_hidden_state
    torch.testing.assert_close(tokens, ref_tokens, rtol=0, atol=1e-6)


def test_long_prompts_are_truncated(enc):
    """Past both limits (77 CLIP tokens, max_tokens T5 tokens) extra words change nothing; T5 keeps its </s>."""
    assert len(enc.tok_l(LONG).input_ids) > CLIP_MAX_LENGTH and len(enc.tok_t5(LONG).input_ids) > MAX_TOKENS
    a, b = enc.encode([LONG]), enc.encode([LONG + " dog blue green sky"])
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert a[1].all()
    ids = enc.tok_t5([LONG], padding="max_length", max_length=MAX_TOKENS, truncation=True).input_ids[0]
    assert len(ids) == MAX_TOKENS and ids[-1] == enc.tok_t5.eos_token_id
    # CLIP's limit is exactly 77 = <|startoftext|> + 75 words + <|endoftext|>: word 75 (0-based 74) still counts,
    # word 76 no longer does
    words = ["cat"] * 80
    last_kept, first_cut = (enc.encode([" ".join(words[:i] + ["dog"] + words[i + 1:])])[2] for i in (74, 75))
    base = enc.encode([" ".join(words)])[2]
    assert not torch.equal(base, last_kept) and torch.equal(base, first_cut)


@pytest.mark.parametrize("missing", list(RELEASE_FOLDERS))
def test_missing_folder_is_a_config_error_naming_it(release, tmp_path, missing):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in RELEASE_FOLDERS:
        if name != missing:
            (partial / name).symlink_to(release / name, target_is_directory=True)
    with pytest.raises(ConfigError, match=rf"{missing}/ not found \(expected .*(CLIP|T5)"):
        ClipT5Encoder.from_release(partial)


def test_missing_release_root_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="release folder .*nowhere.* not found"):
        ClipT5Encoder.from_release(tmp_path / "nowhere")


def test_deterministic_across_calls_and_loads(release, enc):
    a, b = enc.encode(PROMPTS), enc.encode(PROMPTS)
    c = ClipT5Encoder.from_release(release, max_tokens=MAX_TOKENS).encode(PROMPTS)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_bfloat16_option(release, enc):
    half = ClipT5Encoder.from_release(release, max_tokens=MAX_TOKENS, dtype=torch.bfloat16)
    tokens, mask, pooled = half.encode(PROMPTS)
    assert tokens.dtype == pooled.dtype == torch.bfloat16 and half.identity.endswith(":bfloat16")
    ref = enc.encode(PROMPTS)
    assert torch.equal(mask, ref[1])
    torch.testing.assert_close(pooled.float(), ref[2], rtol=0.1, atol=0.1)
