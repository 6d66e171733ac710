"""Token arithmetic of docs/method.md §4 (`pyramid-repro tokens`)."""

import pytest

from pyramid_repro.commands.tokens import main, token_report
from pyramid_repro.config import ConfigError, load_config


def test_paper_token_arithmetic():
    r = token_report(load_config("paper"), 10)
    assert (r.latent_height, r.latent_width, r.tokens_per_frame) == (96, 160, 3840)
    assert (r.pixel_frames, r.latent_frames, r.fullseq_tokens) == (241, 31, 119040)
    assert r.stage_tokens == [240, 960, 3840]
    assert r.reduction_percent > 85.0
    # the KV cache can only remove work, and the pyramid is cheaper to sample than the full sequence
    assert r.gen_pyramid_tokens_kv < r.gen_pyramid_tokens < r.gen_fullseq_tokens


def test_tokens_cli_prints_119040(capsys):
    assert main(["--profile", "paper", "--seconds", "10"]) == 0
    out = capsys.readouterr().out
    assert "119040" in out and "consistent with" in out


def test_tokens_rejects_clip_length_that_is_not_one_plus_kT():
    with pytest.raises(ConfigError, match="temporal_compression"):
        token_report(load_config("paper"), 10.1)
