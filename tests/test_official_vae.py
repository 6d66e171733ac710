"""The authors' causal video VAE rebuilt (vae/official.py): strict loading of the release's state-dict layout,
8x8x8 shapes, causality, exact temporal chunking, load_vae dispatch and `eval-vae --vae`."""

import json
import math

import pytest
import torch
from release_fake_vae import levels_of, release_config, release_shapes, write_fake_release_vae
from safetensors.torch import load_file, save_file

from pyramid_repro.vae.handle import OFFICIAL_NORMALIZATION, LoadedVAE, load_official_vae, load_vae
from pyramid_repro.vae.official import (
    OfficialCausalVAE, _tiled, build_official_vae, is_official_vae_folder, load_state_dict_strictly,
)

# The released model (config: channels 128/256/512/512, 2 encoder / 3 decoder resnets per level, 16 latent
# channels): per block (in, out, resamples), read off CausalVaeEncoder / CausalVaeDecoder.
RELEASE_ENCODER = [(128, 128, True), (128, 256, True), (256, 512, True), (512, 512, False)]
RELEASE_DECODER = [(512, 512, True), (512, 512, True), (512, 256, True), (256, 128, False)]
# a few keys written out in full, as the authors' modules name them
RELEASE_SPOT_CHECKS = {
    "encoder.conv_in.conv.weight": (128, 3, 3, 3, 3),
    "encoder.down_blocks.1.resnets.0.conv_shortcut.conv.weight": (256, 128, 1, 1, 1),
    "encoder.down_blocks.2.downsamplers.0.conv.conv.weight": (512, 512, 3, 3, 3),
    "encoder.down_blocks.2.temporal_downsamplers.0.conv.conv.bias": (512,),
    "encoder.mid_block.attentions.0.group_norm.weight": (512,),
    "encoder.mid_block.attentions.0.to_out.0.weight": (512, 512),
    "encoder.conv_norm_out.bias": (512,),
    "encoder.conv_out.conv.weight": (32, 512, 3, 3, 3),
    "quant_conv.conv.weight": (32, 32, 1, 1, 1),
    "post_quant_conv.conv.weight": (16, 16, 1, 1, 1),
    "decoder.conv_in.conv.weight": (512, 16, 3, 3, 3),
    "decoder.mid_block.resnets.1.norm2.weight": (512,),
    "decoder.up_blocks.0.upsamplers.0.conv.conv.weight": (2048, 512, 3, 3, 3),
    "decoder.up_blocks.2.resnets.0.conv_shortcut.conv.weight": (256, 512, 1, 1, 1),
    "decoder.up_blocks.2.temporal_upsamplers.0.conv.conv.weight": (512, 256, 3, 3, 3),
    "decoder.up_blocks.3.resnets.2.conv2.conv.weight": (128, 128, 3, 3, 3),
    "decoder.conv_out.conv.weight": (3, 128, 3, 3, 3),
}
RELEASE_KEYS, RELEASE_PARAMETERS = 260, 335_402_067  # counted on the authors' CausalVideoVAE (meta device)


def _meta_release_model() -> OfficialCausalVAE:
    with torch.device("meta"):
        return OfficialCausalVAE(release_config(), "release config.json")


def _meta_state_dict(shapes: dict) -> dict:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
    return write_fake_release_vae(tmp_path_factory.mktemp("release") / "causal_video_vae")


@pytest.fixture(scope="module")
def small(fake_folder) -> OfficialCausalVAE:
    return load_official_vae(fake_folder).model


# -- state dict and config ----------------------------------------------------------------------------------------

def test_release_state_dict_loads_strictly_on_meta_device():
    shapes = release_shapes(RELEASE_ENCODER, RELEASE_DECODER)
    assert levels_of((128, 256, 512, 512)) == (RELEASE_ENCODER, RELEASE_DECODER)
    for key, shape in RELEASE_SPOT_CHECKS.items():
        assert shapes[key] == shape, key
    assert len(shapes) == RELEASE_KEYS and sum(math.prod(s) for s in shapes.values()) == RELEASE_PARAMETERS
    model = _meta_release_model()
    load_state_dict_strictly(model, _meta_state_dict(shapes), "fixture")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert all(p.is_meta and p.dtype == torch.float32 for p in model.parameters())
    with torch.device("meta"):
        z = model.encode(torch.empty(1, 3, 17, 64, 96))
        assert z.shape == (1, 16, 3, 8, 12)
        assert model.decode(z).shape == (1, 3, 17, 64, 96)


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_a_wrong_key_is_an_error_naming_it(change):
    sd = _meta_state_dict(release_shapes(RELEASE_ENCODER, RELEASE_DECODER))
    key = {"missing": "decoder.up_blocks.2.temporal_upsamplers.0.conv.conv.bias",
           "extra": "encoder.mid_block.attentions.0.query.weight",
           "shape": "encoder.conv_out.conv.weight"}[change]
    if change == "missing":
        del sd[key]
    elif change == "extra":
        sd[key] = torch.empty(512, 512, device="meta")
    else:
        sd[key] = torch.empty(8, 512, 3, 3, 3, device="meta")  # a 4-channel latent, not the release's 16
    with pytest.raises(ValueError, match=f"fixture: .*{change if change != 'extra' else 'unexpected'}.*{key}"):
        load_state_dict_strictly(_meta_release_model(), sd, "fixture")


def test_config_errors_name_the_file_and_key(tmp_path):
    cfg = release_config()
    del cfg["encoder_out_channels"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: missing required key 'encoder_out_channels'"):
        build_official_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**release_config(), "encoder_heads": 8}))
    with pytest.raises(ValueError, match=r"config\.json: unknown key\(s\) \['encoder_heads'\]"):
        build_official_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(release_config(groups=24)))
    with pytest.raises(ValueError, match="encoder_norm_num_groups=24 does not divide"):
        build_official_vae(tmp_path)


def test_weights_on_disk_load_strictly(fake_folder, tmp_path):
    sd = load_file(str(fake_folder / "model.safetensors"))
    assert all(v.abs().min() > 0 for v in sd.values())  # every tensor randomised, none zero
    # the .bin fallback (no safetensors) loads the same network
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text((fake_folder / "config.json").read_text())
    torch.save(sd, binary / "diffusion_pytorch_model.bin")
    model = load_official_vae(binary).model
    torch.testing.assert_close(model.state_dict()["decoder.conv_out.conv.weight"], sd["decoder.conv_out.conv.weight"])
    # a checkpoint with one tensor missing and one extra is refused, naming both
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((fake_folder / "config.json").read_text())
    del sd["encoder.mid_block.attentions.0.to_k.bias"]
    sd["encoder.mid_block.attentions.0.key.bias"] = torch.ones(32)
    save_file(sd, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="to_k.bias.*key.bias|key.bias.*to_k.bias"):
        load_official_vae(broken)


# -- behaviour of the small instance ------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [1, 9, 17])
def test_shapes_8x_space_8x_time_16_channels(small, frames):
    x = torch.rand(2, 3, frames, 16, 24) * 2 - 1
    with torch.no_grad():
        z = small.encode(x)
        assert z.shape == (2, 16, 1 + (frames - 1) // 8, 2, 3)
        y = small.decode(z)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_bad_shapes_are_clear_errors(small):
    with pytest.raises(ValueError, match=r"T=8.*1 \+ 8k frames and H, W divisible by 8"):
        small.encode(torch.zeros(1, 3, 8, 16, 16))
    with pytest.raises(ValueError, match=r"H=12.*divisible by 8"):
        small.encode(torch.zeros(1, 3, 9, 12, 16))


def test_causal_encoder_and_decoder(small):
    x = torch.randn(1, 3, 17, 16, 16)
    x2 = x.clone()
    x2[:, :, 9:] += 1.0  # frames 9.. feed latent frame 2 only
    x3 = x.clone()
    x3[:, :, 1:] -= 0.5  # every later frame: latent frame 0 is frame 0 alone
    with torch.no_grad():
        z, z2, z3 = small.encode(x), small.encode(x2), small.encode(x3)
        torch.testing.assert_close(z[:, :, :2], z2[:, :, :2], rtol=0, atol=0)
        torch.testing.assert_close(z[:, :, :1], z3[:, :, :1], rtol=0, atol=0)
        assert (z[:, :, 2:] - z2[:, :, 2:]).abs().max() > 1e-4 and (z[:, :, 1:] - z3[:, :, 1:]).abs().max() > 1e-4
        d, d2 = small.decode(z), small.decode(z2)
        torch.testing.assert_close(d[:, :, :9], d2[:, :, :9], rtol=0, atol=0)
        assert (d[:, :, 9:] - d2[:, :, 9:]).abs().max() > 1e-4


def test_chunked_equals_whole_clip(small):
    x = torch.randn(1, 3, 25, 16, 16)
    with torch.no_grad():
        z, d = small.encode(x), small.decode(small.encode(x))
        for chunk in (1, 2, 3):
            torch.testing.assert_close(small.encode(x, chunk_frames=chunk), z, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(small.decode(z, chunk_frames=chunk), d, rtol=1e-5, atol=1e-5)


def test_tiling_geometry_and_shapes(small):
    # overlapping tiles of an identity map blend back into the input: the tile/keep/blend arithmetic is consistent
    x = torch.randn(1, 2, 3, 20, 26)
    torch.testing.assert_close(_tiled(lambda t: t.clone(), x, 8, 6, 2, 6), x, rtol=1e-6, atol=1e-6)
    v = torch.randn(1, 3, 1, 32, 56)
    with torch.no_grad():
        z = small.encode(v, tile_sample_size=32)
        assert z.shape == small.encode(v).shape
        torch.testing.assert_close(small.encode(v, tile_sample_size=64), small.encode(v))  # tile >= clip: untiled
        assert small.decode(z, chunk_frames=1, tile_sample_size=32).shape == v.shape
        with pytest.raises(ValueError, match="tile_sample_size=48: must be 0 .* multiple of 32"):
            small.decode(z, tile_sample_size=48)


# -- suite integration --------------------------------------------------------------------------------------------

def test_load_vae_dispatches_to_the_official_vae(fake_folder, tmp_path):
    assert is_official_vae_folder(fake_folder)
    from pyramid_repro.vae.model import CausalVideoVAE

    CausalVideoVAE(channels=(8, 8), layers_per_block=1, latent_channels=4, spatial_compression=2,
                   temporal_compression=2).save_pretrained(tmp_path / "suite")
    assert not is_official_vae_folder(tmp_path / "suite") and not is_official_vae_folder(tmp_path / "nothing")
    vae = load_vae(fake_folder, chunk_frames=1)
    assert isinstance(vae, LoadedVAE) and isinstance(vae.model, OfficialCausalVAE)
    assert vae.norm == OFFICIAL_NORMALIZATION and not vae.model.training
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (1, 16, 2, 2, 2)
    raw = vae.model.encode(x)
    torch.testing.assert_close(z[:, :, 0], (raw[:, :, 0] - 0.1490) / 1.8415)
    torch.testing.assert_close(z[:, :, 1], (raw[:, :, 1] + 0.2343) / 3.0986)
    y = vae.decode(z)
    assert y.shape == x.shape and y.abs().max() <= 1


def test_eval_vae_on_a_release_folder(fake_folder, tmp_path):
    from pyramid_repro.commands.eval_vae import main as eval_vae
    from pyramid_repro.commands.make_dataset import main as make_dataset

    # 13-frame clips suit the smoke profile's own VAE (1 + 4k) but not the release's (1 + 8k): trimmed to 9
    base = ["--profile", "smoke", "--set", f"results={tmp_path / 'results'}", "--set", "compute.device=cpu",
            "--set", "data.frames=13"]
    assert make_dataset([*base, "--set", "data.synthetic.n_train=2", "--set", "data.synthetic.n_val=1",
                         "--set", "data.synthetic.n_images=1", "--workers", "1"]) == 0
    assert eval_vae([*base, "--vae", str(fake_folder), "--out", str(tmp_path / "eval")]) == 0
    r = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert r["vae_kind"] == "official" and r["vae_folder"] == str(fake_folder)
    assert math.isfinite(r["psnr"]) and r["n_clips"] == 4
    assert r["clip_shape"] == [9, 16, 16] and r["data_clip_shape"] == [13, 16, 16]
    assert (tmp_path / "eval" / "reconstructions.png").is_file()


def test_clips_are_trimmed_and_cropped_to_the_largest_valid_shape():
    from pyramid_repro.vae.evaluate import fit_clips, valid_clip_shape

    assert valid_clip_shape((16, 20, 30), 8, 8) == (9, 16, 24)
    assert valid_clip_shape((9, 16, 16), 8, 8) == (9, 16, 16)
    x = torch.arange(16 * 20 * 30, dtype=torch.float32).view(1, 1, 16, 20, 30)
    torch.testing.assert_close(fit_clips(x, (9, 16, 24)), x[:, :, :9, 2:18, 3:27])
    with pytest.raises(ValueError, match="4 x 4 are smaller than the VAE's 8 x 8 pixel block"):
        valid_clip_shape((9, 4, 4), 8, 8)
