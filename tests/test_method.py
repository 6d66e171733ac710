"""Issue 30: a checkpoint carries its method (eval/method.py), the paper's VBench protocol as a preset and the
protocol flag of the compare table (eval/release.py, report/compare.py), and the authors' conversions under their
presets (eval/sample.py to_uint8 / first_frame_latent). No smoke workflow here: tests/test_report.py runs the
default run's fullseq checkpoint through `compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pyramid_repro.commands import compare as compare_command
from pyramid_repro.config import ConfigError, load_config, save_config
from pyramid_repro import releases
from pyramid_repro.eval import release
from pyramid_repro.eval.method import describe_method, method_keys, resolve_method
from pyramid_repro.eval.sample import first_frame_latent, to_uint8
from pyramid_repro.report.compare import compare
from pyramid_repro.vae.handle import LoadedVAE, Normalization
from pyramid_repro.vae.model import CausalVideoVAE


def _checkpoint(tmp_path: Path, experiment: str | None, name: str = "ck", **over) -> Path:
    """A folder as train-dit leaves it, as far as the method is concerned: config.json + train_config.yaml."""
    ck = tmp_path / name
    ck.mkdir(parents=True)
    (ck / "config.json").write_text(json.dumps({"in_channels": 4, "patch_size": 1}))
    save_config(load_config("smoke", over or None, experiment), ck / "train_config.yaml")
    return ck


# -- 0. the checkpoint's own method ------------------------------------------------------------------------------

def test_method_keys_cover_the_sampler_and_the_attention():
    keys = method_keys(load_config("smoke"))
    for k in ("pyramid.stages", "pyramid.temporal_pyramid", "pyramid.corrective_noise", "model.attention",
              "pyramid.sampler.guidance_video", "pyramid.sampler.steps_first_frame"):
        assert k in keys
    assert "model.depth" not in keys and "eval.samples_per_prompt" not in keys  # shapes / protocol: not method


def test_no_options_take_the_checkpoints_method(tmp_path):
    ck = _checkpoint(tmp_path, "fullseq")
    cfg = load_config("smoke")
    used, method = resolve_method(cfg, ck)
    assert (used.pyramid.stages, used.pyramid.temporal_pyramid, used.model.attention) == (1, False, "bidirectional")
    assert method.summary.startswith("fullseq: 1 stage") and method.overrides == ()
    assert method.source == str(ck / "train_config.yaml")
    assert cfg.pyramid.stages == 3  # the caller's config is not modified
    # the same experiment named: nothing to change, the very same config comes back (workflow results unchanged)
    named = load_config("smoke", None, "fullseq")
    assert resolve_method(named, ck, "fullseq")[0] is named


def test_contradicting_experiment_or_set_is_refused_with_both_values(tmp_path):
    ck = _checkpoint(tmp_path, "fullseq")
    with pytest.raises(ConfigError, match=r"pyramid.stages=1.*--experiment pyramid asks for pyramid.stages=3"):
        resolve_method(load_config("smoke", None, "pyramid"), ck, "pyramid")
    with pytest.raises(ConfigError, match=r"guidance_video=2.0.*--set .*guidance_video=5.0"):
        resolve_method(load_config("smoke", {"pyramid": {"sampler": {"guidance_video": 5.0}}}), ck)
    # the explicit, labelled override
    used, method = resolve_method(load_config("smoke", {"pyramid": {"sampler": {"guidance_video": 5.0}}}), ck,
                                  override=True)
    assert used.pyramid.sampler.guidance_video == 5.0 and used.pyramid.stages == 1
    assert "overridden: pyramid.sampler.guidance_video: 2.0 -> 5.0 (--override-method)" in method.label


def test_inference_only_experiment_overrides_are_labelled_not_refused(tmp_path):
    ck = _checkpoint(tmp_path, "pyramid")
    cfg = load_config("smoke", None, "no_corrective_noise")
    used, method = resolve_method(cfg, ck, "no_corrective_noise")
    assert used is cfg and used.pyramid.corrective_noise is False
    assert "corrective noise off" in method.summary
    assert method.overrides == ("pyramid.corrective_noise: True -> False (inference-only experiment "
                                "no_corrective_noise)",)
    # a training experiment that is not the checkpoint's: refused (history corruption names the training)
    with pytest.raises(ConfigError, match="history_corruption"):
        resolve_method(load_config("smoke", None, "no_history_corruption"), ck, "no_history_corruption")


def test_checkpoint_without_train_config_uses_the_profile(tmp_path):
    ck = tmp_path / "old"
    ck.mkdir()
    cfg = load_config("smoke")
    used, method = resolve_method(cfg, ck)
    assert used is cfg and "not found" in method.source and method.summary == describe_method(cfg)


def test_compare_command_refuses_a_contradicting_experiment(tmp_path):
    ck = _checkpoint(tmp_path, "fullseq")
    with pytest.raises(ConfigError, match=r"pyramid.stages=1.*--experiment pyramid.*pyramid.stages=3"):
        compare_command.main(["--profile", "smoke", "--experiment", "pyramid", "--checkpoint", str(ck),
                              "--set", f"results={tmp_path / 'r'}", "--set", f"reports={tmp_path / 'rep'}"])
    with pytest.raises(ConfigError, match="--preset: only for the authors' release"):
        compare_command.main(["--profile", "smoke", "--checkpoint", str(ck), "--preset", "paper-vbench"])


def test_compare_row_names_the_method_and_samples_with_it(tmp_path):
    ck = _checkpoint(tmp_path, "fullseq")
    cfg = load_config("smoke", {"results": str(tmp_path / "r"), "reports": str(tmp_path / "rep")})
    seen = []
    table = compare(cfg, ck, "synthetic", "new", sample_fn=lambda c, p, out: seen.append(c.pyramid.stages),
                    score_fn=lambda c, v, b, out: {"backend": b, "aggregate": {"total": 1.0}, "fid": None})
    assert seen == [1]
    row = table[table["model"] == "new"].iloc[0]
    assert row["method"].startswith("fullseq: 1 stage, bidirectional attention")


# -- 2. the paper's protocol: preset and flag ---------------------------------------------------------------------

def _release(root: Path) -> Path:
    for name in ("diffusion_transformer_768p", "causal_video_vae", *releases.SD3.text_folders):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "diffusion_transformer_768p" / "config.json").write_text("{}")
    return root


def test_paper_vbench_preset_generates_the_papers_protocol(tmp_path):
    root = _release(tmp_path / "rel")
    run = release.plan(root, preset="paper-vbench")
    assert (run.resolution, run.size, run.latent_frames) == ("768p", (768, 1280), 16)
    p = run.preset
    assert (p.name, p.guidance_video, p.negative_prompt, p.official_conversions) == \
        ("paper-vbench", 5.0, release.NEGATIVE_PROMPT, True)
    proto = release.PAPER_PROTOCOL
    assert (proto.fps, proto.frames, proto.latent_frames, proto.width, proto.height) == (24, 121, 16, 1280, 768)
    assert release.protocol_differences(proto.to_dict()) == []
    with pytest.raises(ConfigError, match="--preset paper-vbench.*drop --size"):
        release.plan(root, size="256x128", preset="paper-vbench")
    with pytest.raises(ConfigError, match="drop --resolution 384p"):
        release.plan(root, "384p", preset="paper-vbench")


def test_compare_flags_a_protocol_that_differs_from_the_papers(tmp_path):
    ck = _checkpoint(tmp_path, "pyramid")
    cfg = load_config("smoke", {"results": str(tmp_path / "r"), "reports": str(tmp_path / "rep")})
    agg = {"total": 80.0, "quality": 82.0, "semantic": 70.0}

    def score(proto):
        return lambda c, v, b, out: {"backend": b, "aggregate": agg, "fid": None, "protocol": proto}

    paper = {**release.PAPER_PROTOCOL.to_dict(), "vbench_version": "0.1.5", "vbench_mode": "long"}
    same = compare(cfg, ck, "vbench", "same", sample_fn=lambda *a: None, score_fn=score(paper))
    assert same[same["model"] == "same"].iloc[0]["protocol"] == "as the paper's"
    assert any("vbench_version='0.1.5'" in line and "vbench_mode='long'" in line
               for line in same.attrs["protocol_lines"])
    eight = {**paper, "fps": 8, "frames": 41}
    t = compare(cfg, ck, "vbench", "eight", sample_fn=lambda *a: None, score_fn=score(eight))
    flag = t[t["model"] == "eight"].iloc[0]["protocol"]
    assert flag.startswith("differs from the paper's") and "fps 8 vs 24" in flag and "frames 41 vs 121" in flag
    assert t[t["model"].str.startswith("Pyramid Flow (paper")].iloc[0]["protocol"] == "paper's"
    assert "fps 8 vs 24" in (tmp_path / "rep" / "smoke" / "compare_eight.csv").read_text()


# -- 3. the authors' conversions ---------------------------------------------------------------------------------

def test_official_uint8_truncates_and_ours_rounds():
    levels = torch.tensor([0.6, 1.4, 254.6, 100.5])  # target levels in 0..255
    video = (levels / 255 * 2 - 1).view(1, 1, 1, 4).expand(3, 1, 1, 4)  # (3, T, H, W) in [-1, 1]
    ours = to_uint8(video)[0, 0, :, 0]
    theirs = to_uint8(video, truncate=True)[0, 0, :, 0]
    assert ours.tolist() == [1, 1, 255, 100] or ours.tolist() == [1, 1, 255, 101]  # round half to even aside
    assert ours[0] == 1 and ours[2] == 255
    assert theirs.tolist()[:3] == [0, 1, 254]  # .byte() after scaling: toward zero


def test_official_i2v_latent_is_a_seeded_draw_ours_the_mean():
    torch.manual_seed(0)
    model = CausalVideoVAE(channels=(8, 8), layers_per_block=1, latent_channels=4, spatial_compression=2,
                           temporal_compression=2).eval()
    vae = LoadedVAE(model, Normalization(0.0, 1.0, 0.0, 1.0))
    image = torch.rand(1, 3, 1, 8, 8) * 2 - 1
    mean = first_frame_latent(vae, image)
    assert torch.equal(mean, first_frame_latent(vae, image))  # ours: the posterior mean, deterministic
    a, b, c = (first_frame_latent(vae, image, seeds) for seeds in ([7, 8], [7, 8], [9, 8]))
    assert a.shape == (2, *mean.shape[1:])
    assert torch.equal(a, b)  # same seeds, same latents
    assert not torch.allclose(a[0], c[0]) and torch.equal(a[1], c[1])  # each sample its own seed
    assert not torch.allclose(a[0], mean[0])  # a draw, not the mean
