"""Synthetic world and real-clip manifests: determinism, factors, rendering, decoding and bad input."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from pyramid_repro.config import load_config
from pyramid_repro.commands.make_dataset import main as make_dataset
from pyramid_repro.data.build import build_synthetic
from pyramid_repro.data.datasets import BadVideoError, ClipDataset, check_manifest, sample_indices
from pyramid_repro.data.synthetic import (
    BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES, Factors, caption, factors_from_spec, render_clip, sample_factors,
)
from pyramid_repro.data.video_io import read_video, write_video


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_byte_identical_manifest_and_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, "0"), (b, "0"), (c, "1")):
        assert make_dataset(["--profile", "smoke", "--set", f"seed={seed}", "--out", str(out)]) == 0
    assert _sha(a / "manifest.csv") == _sha(b / "manifest.csv")
    assert _sha(a / "videos" / "train_000000.mp4") == _sha(b / "videos" / "train_000000.mp4")
    assert _sha(a / "manifest.csv") != _sha(c / "manifest.csv")
    df = pd.read_csv(a / "manifest.csv")
    cfg = load_config("smoke")
    s = cfg.data.synthetic
    assert (df.kind == "video").sum() == s.n_train + s.n_val + s.n_test and (df.kind == "image").sum() == s.n_images
    assert set(df.split) == {"train", "val", "test"}


def test_factors_cover_the_vocabulary_and_captions_name_them():
    rng = np.random.default_rng(0)
    fs = [sample_factors(rng, frames=17) for _ in range(400)]
    assert {o.shape for f in fs for o in f.objects} == set(SHAPES) and len(SHAPES) >= 4
    assert {o.colour for f in fs for o in f.objects} == set(COLOURS) and len(COLOURS) >= 6
    assert {len(f.objects) for f in fs} == {1, 2, 3}
    assert {f.direction for f in fs} == set(DIRECTIONS) | {"static"}
    assert {f.pan for f in fs} == {"none", "left", "right"}
    assert {f.texture for f in fs} == {"none", "stripes", "checker"}
    for f in fs:
        cap = caption(f)
        assert all(o.colour in cap and o.shape in cap for o in f.objects)
        assert f.background in cap and (f.relation is None or f.relation in cap)
        assert Factors.from_dict(json.loads(json.dumps(f.to_dict()))) == f


def _centroid(frame: np.ndarray, rgb) -> np.ndarray:
    mask = np.abs(frame.astype(int) - np.array(rgb)).sum(-1) < 30
    assert mask.sum() > 10, "object colour not found in the frame"
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_objects_move_in_the_stated_direction(direction):
    f = factors_from_spec("square", "red", direction=direction, speed="fast", background="gray")
    clip = render_clip(f, 32, 32, 17)
    move = _centroid(clip[-1], COLOURS["red"]) - _centroid(clip[0], COLOURS["red"])
    dx, dy = DIRECTIONS[direction]
    assert move @ np.array([dx, dy]) > 4.0  # pixels along the stated direction
    assert abs(move @ np.array([dy, dx])) < 1.0  # nothing across it


def test_static_clip_is_static_and_objects_have_their_colour():
    f = factors_from_spec("circle", "blue", direction="static", background="white")
    clip = render_clip(f, 32, 32, 9)
    assert np.array_equal(clip[0], clip[-1])
    bg = np.array(BACKGROUNDS["white"])
    assert (np.abs(clip[0].astype(int) - bg).sum(-1) < 5).mean() > 0.5


def test_relation_holds_in_pixels():
    f = factors_from_spec("square", "red", relation="to the left of", other_shape="circle", other_colour="green")
    frame = render_clip(f, 32, 32, 1)[0]
    assert _centroid(frame, COLOURS["red"])[0] < _centroid(frame, COLOURS["green"])[0] - 4


def test_bad_spec_is_named():
    with pytest.raises(ValueError, match="shape='hexagon'"):
        factors_from_spec("hexagon", "red")


def test_video_roundtrip_is_lossless(tmp_path):
    x = (np.random.default_rng(0).random((5, 16, 24, 3)) * 255).astype(np.uint8)
    write_video(tmp_path / "v.mp4", x, 8)
    y, fps = read_video(tmp_path / "v.mp4")
    assert fps == 8 and np.array_equal(x, y)
    # the colour converter is shared across files (video_io._rgb24): files of other sizes read in turn stay exact
    z = (np.random.default_rng(1).random((3, 32, 8, 3)) * 255).astype(np.uint8)
    write_video(tmp_path / "z.mp4", z, 8)
    for _ in range(2):
        assert np.array_equal(read_video(tmp_path / "z.mp4")[0], z)
        assert np.array_equal(read_video(tmp_path / "v.mp4")[0], x)


def test_sample_indices_resample_by_time():
    assert sample_indices(48, 24.0, 4, 8.0).tolist() == [0, 3, 6, 9]
    with pytest.raises(BadVideoError, match="too short"):
        sample_indices(5, 8.0, 9, 8.0)


@pytest.fixture
def real_manifest(tmp_path):
    """Small 'real' clips: a 24 fps 48x64 clip, a too-short one, a broken file and a missing one."""
    rng = np.random.default_rng(0)
    write_video(tmp_path / "good.mp4", (rng.random((40, 48, 64, 3)) * 255).astype(np.uint8), 24)
    write_video(tmp_path / "short.mp4", (rng.random((3, 48, 64, 3)) * 255).astype(np.uint8), 24)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    rows = [("good.mp4", "a clip"), ("short.mp4", "short"), ("broken.mp4", "broken"), ("missing.mp4", "gone")]
    pd.DataFrame(rows, columns=["path", "caption"]).to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "m.csv"


def test_real_clip_is_resampled_and_center_cropped(real_manifest):
    ds = ClipDataset(real_manifest, None, None, 32, 32, 9, 8, on_bad_video="skip")
    assert len(ds) == 1 and len(ds.skipped) == 3
    item = ds[0]
    assert item["video"].shape == (3, 9, 32, 32) and item["video"].min() >= -1 and item["video"].max() <= 1
    reasons = " ".join(s["error"] for s in ds.skipped)
    assert "too short" in reasons and "cannot decode" in reasons and "not found" in reasons


@pytest.mark.parametrize("name,problem", [("broken.mp4", "cannot decode"), ("missing.mp4", "not found"),
                                          ("short.mp4", "too short")])
def test_bad_video_is_a_clear_error(real_manifest, name, problem):
    df = pd.read_csv(real_manifest)
    df = df[df.path == name]
    df.to_csv(real_manifest, index=False)
    ds = ClipDataset(real_manifest, None, None, 32, 32, 9, 8, on_bad_video="error")
    with pytest.raises(BadVideoError) as e:
        ds[0]
    assert name in str(e.value) and problem in str(e.value)
    with pytest.raises(BadVideoError, match=name):
        check_manifest(real_manifest, "error", frames=9, fps=8)


def test_synthetic_dataset_items(tmp_path):
    cfg = load_config("smoke", {"results": str(tmp_path)})
    out = cfg.layout.data()
    build_synthetic(cfg, out).to_csv(out / "manifest.csv", index=False)
    vids = ClipDataset.from_config(cfg, "train", "video")
    imgs = ClipDataset.from_config(cfg, "train", "image")
    assert vids[0]["video"].shape == (3, cfg.data.frames, cfg.data.height, cfg.data.width)
    assert imgs[0]["video"].shape == (3, 1, cfg.data.height, cfg.data.width)
    assert vids[0]["factors"]["objects"]


@pytest.mark.parametrize("frames", [9, 17, 33, 65])
def test_every_clip_length_keeps_objects_in_the_canvas(frames):
    """Factors drawn for any profile's clip length (smoke 9, tiny 17, small 33, 65) place every object so it
    stays inside the frame for the whole clip, camera pan included; the travel over the clip is that of a
    17-frame clip, so `fast` stays twice `slow`."""
    from pyramid_repro.data.synthetic import SPEEDS, speed_scale

    rng = np.random.default_rng(frames)
    for _ in range(300):
        f = sample_factors(rng, max_objects=3, static_fraction=0.2, camera_pan_prob=0.5, frames=frames)
        vx, vy = f.velocity
        t = np.arange(frames)
        for o in f.objects:
            xs, ys = o.x + (vx + f.pan_velocity) * t, o.y + vy * t
            assert xs.min() >= o.size - 1e-9 and xs.max() <= 1 - o.size + 1e-9, (f, frames)
            assert ys.min() >= o.size - 1e-9 and ys.max() <= 1 - o.size + 1e-9, (f, frames)
    travel = SPEEDS["fast"] * speed_scale(frames) * (frames - 1)
    assert travel == pytest.approx(SPEEDS["fast"] * min(frames - 1, 16))


@pytest.mark.parametrize("frames", [17, 33, 65])
def test_prompted_motion_stays_visible_at_every_clip_length(frames):
    f = factors_from_spec("square", "red", direction="right", speed="slow", background="gray", frames=frames)
    clip = render_clip(f, 32, 32, frames)
    first, last = _centroid(clip[0], COLOURS["red"]), _centroid(clip[-1], COLOURS["red"])
    assert last[0] - first[0] > 4.0  # pixels to the right over the clip
    assert (np.abs(clip.astype(int) - np.array(COLOURS["red"])).sum(-1) < 30).sum((1, 2)).min() > 10  # in frame


def test_small_profile_dataset_builds_in_miniature(tmp_path):
    """`make-dataset --profile small` (33-frame 128x128 clips) with a handful of items."""
    out = tmp_path / "small"
    assert make_dataset(["--profile", "small", "--set", "data.synthetic.n_train=4", "--set", "data.synthetic.n_val=2",
                         "--set", "data.synthetic.n_test=2", "--set", "data.synthetic.n_images=2",
                         "--out", str(out)]) == 0
    df = pd.read_csv(out / "manifest.csv")
    assert len(df) == 10 and set(df[df.kind == "video"].frames) == {33}
    frames, _ = read_video(out / df[df.kind == "video"].path.iloc[0])
    assert frames.shape == (33, 128, 128, 3)


# --- bad rows of a real-data manifest through `pyramid-repro make-dataset`: one line, no traceback ---------------


def _cli_make_dataset(manifest, out, *sets):
    from pyramid_repro.cli import main as cli

    args = ["make-dataset", "--profile", "smoke", "--set", "data.source=manifest", "--set", f"data.manifest={manifest}"]
    for s in sets:
        args += ["--set", s]
    try:
        return cli(args + ["--out", str(out)])
    except SystemExit as e:  # argparse / config errors
        return e.code


def _subset(manifest, names, splits=None):
    df = pd.read_csv(manifest).set_index("path").loc[names].reset_index()
    if splits is not None:
        df["split"] = splits
    df.to_csv(manifest, index=False)
    return manifest


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name,problem", [("missing.mp4", "file not found"), ("broken.mp4", "cannot decode"),
                                          ("short.mp4", "too short")])
def test_make_dataset_bad_row_is_one_line_error(real_manifest, tmp_path, capsys, name, problem):
    manifest = _subset(real_manifest, ["good.mp4", name])
    rc = _cli_make_dataset(manifest, tmp_path / "out")  # data.on_bad_video defaults to error
    assert rc not in (0, None)
    line = _one_line_error(capsys)
    assert line.startswith("pyramid-repro make-dataset: ")
    assert str(manifest) in line and "row 1 (line 3)" in line and f"path '{name}'" in line and problem in line
    assert "fix or remove the row" in line and "data.on_bad_video: skip" in line
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_make_dataset_every_row_skipped_is_an_error(real_manifest, tmp_path, capsys):
    manifest = _subset(real_manifest, ["short.mp4", "broken.mp4", "missing.mp4"])
    rc = _cli_make_dataset(manifest, tmp_path / "out", "data.on_bad_video=skip")
    assert rc not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # the per-row "skipped" notes come first
    assert line.startswith("pyramid-repro make-dataset: ") and str(manifest) in line
    assert "all 3 row(s)" in line and "skipped" in line
    assert "1 too short" in line and "1 cannot decode" in line and "1 file not found" in line
    assert "row 0, path 'short.mp4'" in line and "fix the files or their paths" in line
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_make_dataset_split_emptied_by_skipping_is_an_error(real_manifest, tmp_path, capsys):
    manifest = _subset(real_manifest, ["good.mp4", "broken.mp4"], splits=["train", "val"])
    rc = _cli_make_dataset(manifest, tmp_path / "out", "data.on_bad_video=skip")
    assert rc not in (0, None)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(manifest) in line and "all 1 row(s) of split='val' kind='video'" in line and "1 cannot decode" in line


def test_make_dataset_skips_a_bad_row_and_reports_it(real_manifest, tmp_path, capsys):
    manifest = _subset(real_manifest, ["good.mp4", "missing.mp4"])
    out = tmp_path / "out"
    assert _cli_make_dataset(manifest, out, "data.on_bad_video=skip") == 0
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    assert "skipped" in cap.err and "row 1 (line 3), path 'missing.mp4'" in cap.err and "file not found" in cap.err
    assert "1 bad row(s) skipped" in cap.out
    df = pd.read_csv(out / "manifest.csv")
    assert len(df) == 1 and df.path.iloc[0].endswith("good.mp4")
    info = json.loads((out / "dataset.json").read_text())
    assert [(b["row"], b["path"], b["reason"]) for b in info["bad_rows"]] == [("1", "missing.mp4", "file not found")]


def test_bad_row_met_while_training_is_one_line_error(real_manifest, tmp_path, capsys, monkeypatch):
    """A bad row read later (ClipDataset.__getitem__ in a training/eval command) ends the command the same way."""
    import pyramid_repro.commands.make_dataset as make_dataset_command
    from pyramid_repro.cli import main as cli

    manifest = _subset(real_manifest, ["good.mp4", "broken.mp4"])

    def command(argv):
        cfg = load_config("smoke", {"data": {"source": "manifest", "manifest": str(manifest)}})
        ds = ClipDataset.from_config(cfg, "train", "video")
        return [ds[i] for i in range(len(ds))] and 0

    monkeypatch.setattr(make_dataset_command, "main", command)
    assert cli(["make-dataset"]) == 2
    line = _one_line_error(capsys)
    assert str(manifest) in line and "row 1 (line 3), path 'broken.mp4'" in line and "cannot decode" in line
    assert "data.on_bad_video: skip" in line
