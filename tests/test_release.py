"""The authors' release folder (eval/release.py): detection, the official settings, strict loading, and
`compare --checkpoint <release>` / `sample --checkpoint <release>` end to end on a fake release (tiny random
models in the release's layout; no real weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pyramid_repro.config import ConfigError, load_config
from pyramid_repro import releases
from pyramid_repro.eval import release


def test_official_settings_are_the_authors():
    t2v, i2v = release.PRESETS["official-t2v"], release.PRESETS["official-i2v"]
    assert (t2v.steps_first_frame, t2v.steps_later_frames, t2v.guidance_first_frame, t2v.guidance_video) == \
        ((20, 20, 20), (10, 10, 10), 7.0, 5.0)
    assert (i2v.steps_later_frames, i2v.guidance_video) == ((10, 10, 10), 4.0)
    assert t2v.prompt_suffix == ", hyper quality, Ultra HD, 8K"
    assert t2v.negative_prompt.startswith("cartoon style, worst quality") and t2v.negative_prompt.endswith("horror")
    assert (releases.VIDEO_RESOLUTIONS["384p"].width, releases.VIDEO_RESOLUTIONS["384p"].height) == (640, 384)
    assert (releases.VIDEO_RESOLUTIONS["768p"].width, releases.VIDEO_RESOLUTIONS["768p"].height) == (1280, 768)
    res = releases.VIDEO_RESOLUTIONS
    assert res["384p"].max_latent_frames == 16 and res["768p"].max_latent_frames == 31
    c = release.release_config(load_config("smoke"), t2v)
    p = c.pyramid
    assert (p.stages, p.end_sigmas, p.gamma, p.corrective_noise, p.temporal_pyramid) == \
        (3, [0.667, 0.334, 0.0], 1 / 3, True, True)
    assert (p.sampler.steps_first_frame, p.sampler.guidance_video) == ([20, 20, 20], 5.0)
    assert (c.vae.latent_channels, c.vae.spatial_compression, c.vae.temporal_compression, c.data.fps) == (16, 8, 8, 24)
    assert "20,20,20/10,10,10" in t2v.describe() and "guidance 7" in t2v.describe()


def _layout(root: Path, skip: str = "") -> Path:
    for name in ("diffusion_transformer_384p", "causal_video_vae", *releases.SD3.text_folders):
        if name != skip:
            (root / name).mkdir(parents=True, exist_ok=True)
    if skip != "diffusion_transformer_384p":
        (root / "diffusion_transformer_384p" / "config.json").write_text("{}")
    return root


def test_release_detection_and_clear_errors(tmp_path):
    root = _layout(tmp_path / "rel")
    assert releases.find_release(root).root == root
    assert releases.find_release(root / "diffusion_transformer_384p").root == root  # the transformer folder itself
    suite_ckpt = tmp_path / "ckpt"
    suite_ckpt.mkdir()
    (suite_ckpt / "config.json").write_text("{}")
    assert releases.find_release(suite_ckpt) is None
    run = release.plan(root)
    assert (run.resolution, run.size, run.latent_frames, run.preset.name) == ("384p", (384, 640), 16,
                                                                              "official-t2v")
    assert release.plan(root, image=Path("x.png")).preset.name == "official-i2v"
    custom = release.plan(root, guidance=9.0)
    assert custom.preset.guidance_first_frame == 9.0 and custom.preset.guidance_video == 5.0
    with pytest.raises(ConfigError, match="diffusion_transformer_768p: no transformer here.*has 384p"):
        release.plan(root, "768p")
    with pytest.raises(ConfigError, match="1 to 16 latent frames"):
        release.plan(root, latent_frames=31)
    with pytest.raises(ConfigError, match="multiples of 64"):
        release.plan(root, size="100x64")
    (root / "diffusion_transformer_768p").mkdir()
    (root / "diffusion_transformer_768p" / "config.json").write_text("{}")
    ten = release.plan(root, "768p", latent_frames=31)  # 10 s at 768p
    assert (ten.resolution, ten.size, ten.latent_frames) == ("768p", (768, 1280), 31)
    assert release.plan(root / "diffusion_transformer_768p").resolution == "768p"  # the folder names it
    incomplete = _layout(tmp_path / "inc", skip="tokenizer_3")
    with pytest.raises(ConfigError, match="missing tokenizer_3/"):
        release.plan(incomplete)


def test_release_transformer_loads_strictly_with_the_authors_names_and_eps(tmp_path):
    from release_fake import write_fake_transformer

    from pyramid_repro.models.official import OfficialPyramidDiT

    folder = write_fake_transformer(tmp_path / "diffusion_transformer_384p")
    m = releases.SD3.load_transformer(folder)  # what load_release calls: the authors' eps by default
    assert isinstance(m, OfficialPyramidDiT) and m.blocks[0].vid.q_norm.eps == 1e-5
    assert m.blocks[-1].txt.pre_only and not m.blocks[0].txt.pre_only
    # the authors' spelling of the text stream's QK norm reached the model (not left at RMSNorm's ones)
    assert not torch.equal(m.blocks[0].txt.q_norm.weight, torch.ones_like(m.blocks[0].txt.q_norm.weight))


@pytest.fixture(scope="module")
def fake_release(tmp_path_factory) -> Path:
    from release_fake import write_fake_release

    return write_fake_release(tmp_path_factory.mktemp("release") / "pyramid-flow-sd3")


def _args(tmp_path: Path, results: Path | None = None) -> list[str]:
    return ["--profile", "smoke", "--set", f"results={results or tmp_path / 'results'}",
            "--set", f"reports={tmp_path}/reports",
            "--set", "eval.max_prompts=2", "--set", "eval.samples_per_prompt=1", "--set", "compute.device=cpu",
            "--size", "128x64", "--latent-frames", "2"]


def test_compare_on_a_fake_release_runs_end_to_end(fake_release, smoke_run, tmp_path, capsys):
    """On the smoke workflow's results: its probe scores the videos, its pyramid is the row compared with."""
    import pandas as pd

    from pyramid_repro.commands.compare import main

    results = smoke_run / "results"
    assert main(_args(tmp_path, results) + ["--checkpoint", str(fake_release), "--backend", "synthetic"]) == 0
    printed = capsys.readouterr().out
    assert "official-t2v: Euler steps 20,20,20/10,10,10" in printed
    table = pd.read_csv(tmp_path / "reports" / "smoke" / "compare_release-384p.csv")
    row = table[table["model"].str.startswith("Pyramid Flow release 384p")].iloc[0]
    assert "official-t2v" in row["model"] and "128x64" in row["model"]
    assert "negative prompt" in row["settings"] and row["total"] == row["total"]  # scored: not NaN
    assert table["model"].str.startswith("Δ Pyramid Flow release").any()  # set against this run's pyramid
    work = results / "smoke" / "compare" / "release-384p"
    index = json.loads((work / "samples" / "samples.json").read_text())
    assert index["release"]["preset"] == "official-t2v" and index["release"]["fps"] == 24
    assert len(index["samples"]) == 2
    from pyramid_repro.data.video_io import read_video

    frames = read_video(work / "samples" / index["samples"][0]["path"])[0]
    assert frames.shape[:3] == (9, 64, 128)  # 2 latent frames -> 1 + 8 frames of 64 x 128
    assert (tmp_path / "reports" / "smoke" / "compare_release-384p.pdf").is_file()


def test_sample_image_to_video_on_a_fake_release(fake_release, tmp_path):
    from PIL import Image

    from pyramid_repro.commands.sample import main

    img = tmp_path / "first.png"
    Image.new("RGB", (200, 100), (200, 30, 30)).save(img)
    out = tmp_path / "videos"
    assert main(_args(tmp_path) + ["--checkpoint", str(fake_release / "diffusion_transformer_384p"),
                                   "--image", str(img), "--out", str(out)]) == 0
    index = json.loads((out / "samples.json").read_text())
    assert index["release"]["preset"] == "official-i2v" and index["release"]["image"] == str(img)
    assert "video guidance" not in index["release"]["settings"] and "4 (video)" in index["release"]["settings"]


def test_suite_checkpoint_image_to_video(smoke_run, tmp_path, monkeypatch):
    """`sample --image` on a checkpoint this suite trained: the image's normalised VAE latent is the first latent
    frame of every video (checked on the latents the sampler decodes), and only then."""
    from PIL import Image

    from pyramid_repro.eval import sample
    from pyramid_repro.vae import load_vae

    cfg = load_config("smoke", {"results": str(smoke_run / "results"), "eval": {"max_prompts": 1,
                                                                               "samples_per_prompt": 2}})
    img = tmp_path / "first.png"
    Image.new("RGB", (40, 40), (30, 200, 60)).save(img)
    decoded = []
    real = sample.decode_latents  # what sample_videos decodes with (imported from vae/handle.py)
    monkeypatch.setattr(sample, "decode_latents", lambda vae, lat: decoded.append(lat.clone()) or real(vae, lat))
    index = json.loads(sample.run(cfg, "pyramid", "synthetic", tmp_path / "i2v", image=img).read_text())
    assert index["image"] == str(img) and len(index["samples"]) == 2
    st = cfg.train.curriculum[-1]
    vae = load_vae(cfg.layout.vae_final())
    want = vae.encode(sample.load_image(img, (st.height, st.width)))[:, :, 0]
    (lat,) = decoded
    assert lat.shape[0] == 2 and lat.shape[2] > 1
    torch.testing.assert_close(lat[:, :, 0], want.expand(2, -1, -1, -1))
    decoded.clear()
    sample.run(cfg, "pyramid", "synthetic", tmp_path / "t2v")  # text-to-video: frame 0 is generated
    assert (decoded[0][:, :, 0] - want).abs().max() > 1e-2
