"""Prompt suites: the synthetic suite's ground truth matches its text, covers VBench's dimensions in the synthetic
world, every prefix (eval.max_prompts) is balanced; VBench's suite keeps its per-dimension structure; EvalCrafter
loads from a local copy only."""

import json

import numpy as np
import pytest

from pyramid_repro.config import ConfigError, load_config, replication_dir
from pyramid_repro.data.synthetic import COLOURS, SHAPES, Factors, caption, render_clip
from pyramid_repro.eval.prompts import Prompt, balanced_order, load_suite
from pyramid_repro.eval.vbench import VBENCH_DIMENSIONS


def test_synthetic_suite_ground_truth_and_coverage():
    cfg = load_config("tiny")
    syn = load_suite("synthetic", cfg)
    assert 24 <= len(syn) <= 40 and len({p.id for p in syn}) == len(syn)
    for p in syn:
        f = Factors.from_dict(p.factors)
        assert caption(f) == p.text  # the text is the world's caption of the ground truth
        assert set(p.dimensions) <= set(VBENCH_DIMENSIONS)
        assert all(o["shape"] in SHAPES and o["colour"] in COLOURS for o in p.factors["objects"])
        if "spatial_relationship" in p.dimensions:
            assert p.factors["relation"] and len(p.factors["objects"]) == 2
        if "dynamic_degree" in p.dimensions:
            assert p.factors["direction"] != "static"
    by_dim = {d: [p for p in syn if d in p.dimensions] for d in VBENCH_DIMENSIONS}
    # every shape is asked for by object_class prompts, every colour by color prompts, every relation, direction
    assert {p.factors["objects"][0]["shape"] for p in by_dim["object_class"]} == set(SHAPES)
    assert {p.factors["objects"][0]["colour"] for p in by_dim["color"]} == set(COLOURS)
    assert len({p.factors["relation"] for p in by_dim["spatial_relationship"]}) == 4
    assert len({p.factors["direction"] for p in by_dim["dynamic_degree"]}) == 4
    # static prompts exist for flicker (no motion at all)
    assert any(p.factors["direction"] == "static" for p in by_dim["temporal_flickering"])
    # ground truth is deterministic (the same factors on a second load) and renders
    again = load_suite("synthetic", cfg)
    assert [p.factors for p in again] == [p.factors for p in syn]
    clip = render_clip(Factors.from_dict(syn[0].factors), 16, 16, 5)
    assert clip.shape == (5, 16, 16, 3) and clip.dtype == np.uint8


def test_max_prompts_prefix_is_balanced():
    cfg = load_config("tiny")
    cfg.eval.max_prompts = 4
    first = load_suite("synthetic", cfg, limit=True)
    assert len(first) == 4
    # four different primary dimensions among the first four prompts
    assert len({p.dimensions[0] for p in first}) == 4
    assert [p.id for p in first] == [p.id for p in load_suite("synthetic", cfg)[:4]]
    order = balanced_order([Prompt("a1", "", ("a",)), Prompt("a2", "", ("a",)), Prompt("b1", "", ("b",))])
    assert [p.id for p in order] == ["a1", "b1", "a2"]
    cfg.eval.max_prompts = -1
    with pytest.raises(ConfigError, match="eval.max_prompts"):
        load_suite("synthetic", cfg)


def test_vbench_suite_keeps_per_dimension_structure():
    cfg = load_config("tiny")
    vb = load_suite("vbench", cfg)
    info = json.loads((replication_dir() / "prompts/vbench/VBench_full_info.json").read_text())
    assert len(vb) == len(info) == 946
    for p in vb:  # ids are positions in VBench's file
        d = info[int(p.id.split("_")[1])]
        assert (p.text, p.dimensions, p.factors) == (d["prompt_en"], tuple(d["dimension"]), None)
    assert "Apache License" in (replication_dir() / "prompts/vbench/LICENSE").read_text()
    cfg.eval.max_prompts = 16
    assert len({p.dimensions[0] for p in load_suite("vbench", cfg, limit=True)}) >= 10


def test_evalcrafter_from_local_copy_only(tmp_path):
    cfg = load_config("tiny")
    with pytest.raises(ConfigError, match="evalcrafter_path"):
        load_suite("evalcrafter", cfg)
    (tmp_path / "prompts.txt").write_text("a cat playing piano\n\n  a dog surfing  \n")
    cfg.eval.evalcrafter_path = str(tmp_path)
    ec = load_suite("evalcrafter", cfg)
    assert [p.text for p in ec] == ["a cat playing piano", "a dog surfing"] and ec[1].id == "evalcrafter_0001"
    with pytest.raises(ConfigError, match="eval.suite='imagenet'"):
        load_suite("imagenet", cfg)
