"""VBench: its aggregation (docs/method.md §8, from VBench's own scoring scripts) and the official runner.

`aggregate` turns raw dimension scores in [0, 1] into VBench's Quality / Semantic / Total in percent: each score is
normalised (s - Min) / (Max - Min), Quality is the weighted mean of the 7 quality dimensions, Semantic of the 9
semantic ones (weight 1, dynamic degree 0.5), Total = (4 Quality + Semantic) / 5. With a subset of dimensions
(e.g. the synthetic proxy) the same formula runs over the dimensions present and the result names what is missing.

The official VBench pins transformers 4.33 / numpy < 2, so it runs in its own environment
(docs/vbench.md; eval.vbench_env = that environment's python) and needs a GPU and its weights.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pyramid_repro.config import Config, ConfigError

NORMALIZE: dict[str, tuple[float, float]] = {  # (Min, Max) of VBench's scoring script
    "subject_consistency": (0.1462, 1.0),
    "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0),
    "motion_smoothness": (0.706, 0.9975),
    "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0),
    "imaging_quality": (0.0, 1.0),
    "object_class": (0.0, 1.0),
    "multiple_objects": (0.0, 1.0),
    "human_action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial_relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance_style": (0.0009, 0.2855),
    "temporal_style": (0.0, 0.364),
    "overall_consistency": (0.0, 0.364),
}
QUALITY = ["subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
           "aesthetic_quality", "imaging_quality", "dynamic_degree"]
SEMANTIC = ["object_class", "multiple_objects", "human_action", "color", "spatial_relationship", "scene",
            "appearance_style", "temporal_style", "overall_consistency"]
WEIGHTS = {d: (0.5 if d == "dynamic_degree" else 1.0) for d in NORMALIZE}
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4.0, 1.0


def normalized(dimension: str, score: float) -> float:
    lo, hi = NORMALIZE[dimension]
    return (score - lo) / (hi - lo)


def aggregate(scores: dict[str, float]) -> dict:
    """VBench's Quality / Semantic / Total (percent) from raw dimension scores in [0, 1]."""
    unknown = sorted(set(scores) - set(NORMALIZE))
    if unknown:
        raise ValueError(f"unknown VBench dimension(s) {unknown}; expected names from {sorted(NORMALIZE)}")
    for d, s in scores.items():
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"VBench dimension {d}={s}: raw scores are in [0, 1] (divide percentages by 100)")

    def group(dims):
        present = [d for d in dims if d in scores]
        if not present:
            return None
        return sum(WEIGHTS[d] * normalized(d, scores[d]) for d in present) / sum(WEIGHTS[d] for d in present)

    q, s = group(QUALITY), group(SEMANTIC)
    if q is not None and s is not None:
        total = (QUALITY_WEIGHT * q + SEMANTIC_WEIGHT * s) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    else:
        total = q if s is None else s
    pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
    return {"total": pct(total), "quality": pct(q), "semantic": pct(s),
            "missing": [d for d in QUALITY + SEMANTIC if d not in scores]}


VBENCH_DIMENSIONS: list[str] = QUALITY + SEMANTIC  # the 16 dimensions of VBench (standard mode runs all)
RESULTS_NAME = "results"  # VBench writes <output_path>/<name>_eval_results.json


def stage_videos(video_dir: Path, staged: Path) -> int:
    """Symlink the .mp4 files of `video_dir` into `staged` (nothing else). VBench 0.1.5's standard mode takes the
    file suffix from the first entry of os.listdir(videos_path), so samples.json next to the videos would make it
    look for <prompt>-<i>.json and find nothing. Returns the number of videos staged."""
    video_dir, staged = Path(video_dir), Path(staged)
    vids = sorted(video_dir.glob("*.mp4"))
    if not vids:
        raise FileNotFoundError(f"{video_dir}: no .mp4 videos to score with VBench")
    staged.mkdir(parents=True, exist_ok=True)
    for old in staged.iterdir():
        old.unlink()
    for v in vids:
        (staged / v.name).symlink_to(v.resolve())
    return len(vids)


def missing_videos(video_dir: Path, full_info: Path, samples_per_prompt: int) -> list[str]:
    """VBench standard-mode file names (<prompt_en>-<i>.mp4, i < samples_per_prompt) absent from `video_dir`."""
    have = {p.name for p in Path(video_dir).glob("*.mp4")}
    want = [f"{d['prompt_en']}-{i}.mp4" for d in json.loads(Path(full_info).read_text())
            for i in range(samples_per_prompt)]
    return [w for w in want if w not in have]


def _check_env(cfg: Config) -> tuple[Path, Path]:
    if not cfg.eval.vbench_env:
        raise ConfigError("eval.vbench_env is not set: the vbench backend needs the python of an environment "
                          "with vbench 0.1.5 (docs/vbench.md says how to create it)")
    py = Path(cfg.eval.vbench_env)
    if not py.is_file():
        raise ConfigError(f"eval.vbench_env={str(py)!r}: no such python executable")
    if not cfg.eval.vbench_weights or not Path(cfg.eval.vbench_weights).is_dir():
        raise ConfigError(f"eval.vbench_weights={cfg.eval.vbench_weights!r}: folder of VBench's model weights not "
                          "found (VBench's own download step; never run by this suite)")
    return py, Path(cfg.eval.vbench_weights)


# eval.vbench_mode -> (module, class, VBench's `mode` argument). Standard: `vbench.VBench`, mode vbench_standard.
# Long (VBench-Long, VBench's README: "for videos of 5 s or more"): `vbench2_beta_long.VBenchLong` (a subclass of
# VBench, in VBench's repository), mode long_vbench_standard; it splits every video into scene-cut-free clips,
# scores the clips and combines them with its slow-fast consistency (vbench2_beta_long/README.md).
MODES: dict[str, tuple[str, str, str]] = {
    "standard": ("vbench", "VBench", "vbench_standard"),
    "long": ("vbench2_beta_long", "VBenchLong", "long_vbench_standard"),
}
VERSION_SCRIPT = ("import importlib.metadata as m\ntry:\n    print(m.version('vbench'))\n"
                  "except m.PackageNotFoundError:\n    print('unknown')")


def vbench_command(cfg: Config, videos: Path, out: Path, full_info: Path,
                   dimensions: list[str] | None = None) -> list[str]:
    """The official VBench run on a folder holding only the videos, in the mode eval.vbench_mode:
    standard: its Python API `VBench(device, full_info, output).evaluate(videos_path, name, dimension_list,
    local=True, mode="vbench_standard")`, the call its `vbench evaluate` CLI makes through torch.distributed;
    long: `VBenchLong(...)` from `vbench2_beta_long` with mode "long_vbench_standard" (VBench-Long's README §4.1).
    Run it with `vbench_env(cfg)` so `local=True` loads the checkpoints from eval.vbench_weights instead of
    downloading."""
    py, _ = _check_env(cfg)
    dims = list(dimensions or VBENCH_DIMENSIONS)
    unknown = sorted(set(dims) - set(VBENCH_DIMENSIONS))
    if unknown:
        raise ValueError(f"unknown VBench dimension(s) {unknown}; expected names from {VBENCH_DIMENSIONS}")
    if cfg.eval.vbench_mode not in MODES:
        raise ConfigError(f"eval.vbench_mode={cfg.eval.vbench_mode!r}: expected one of {', '.join(MODES)}")
    module, cls, mode = MODES[cfg.eval.vbench_mode]
    script = (f"import json, sys, torch; from {module} import {cls}; "
              f"{cls}(torch.device('cuda'), sys.argv[1], sys.argv[2]).evaluate(videos_path=sys.argv[4], "
              f"name={RESULTS_NAME!r}, dimension_list=json.loads(sys.argv[3]), local=True, mode={mode!r})")
    return [str(py), "-c", script, str(full_info), str(out), json.dumps(dims), str(videos)]


def vbench_version(cfg: Config) -> str:
    """The version of the `vbench` package in eval.vbench_env ('unknown' when it cannot say): its PyPI releases
    changed preprocessing (e.g. imaging_quality in 0.1.2), so a score records it."""
    py, _ = _check_env(cfg)
    r = subprocess.run([str(py), "-c", VERSION_SCRIPT], capture_output=True, text=True, check=False)
    return (r.stdout.strip().splitlines() or ["unknown"])[-1] if r.returncode == 0 else "unknown"


def vbench_protocol(cfg: Config, video_dir: Path) -> dict:
    """What a VBench number must carry to be comparable with the paper's (docs/release.md §7): the VBench version
    and mode, the prompt set (standard; any suffix appended to the prompts), and fps, frame count and resolution
    of the videos as sample wrote them (samples.json `protocol`; absent fields are None)."""
    index = Path(video_dir) / "samples.json"
    made = (json.loads(index.read_text()).get("protocol") or {}) if index.is_file() else {}
    return {"vbench_version": vbench_version(cfg), "vbench_mode": cfg.eval.vbench_mode,
            "prompt_set": made.get("prompt_set", "standard"), "prompt_suffix": made.get("prompt_suffix", ""),
            "fps": made.get("fps"), "frames": made.get("frames"), "width": made.get("width"),
            "height": made.get("height")}


def vbench_env(cfg: Config) -> dict[str, str]:
    """Environment additions for the VBench run: VBENCH_CACHE_DIR (vbench/utils.py reads it) = the local weights."""
    _, weights = _check_env(cfg)
    return {"VBENCH_CACHE_DIR": str(weights.resolve())}


def results_path(out: Path) -> Path:
    return Path(out) / f"{RESULTS_NAME}_eval_results.json"


def run_vbench(cfg: Config, video_dir: Path, out: Path, full_info: Path) -> dict[str, float]:
    """Stage the videos, run official VBench in its environment, parse its results -> {dimension: raw score}."""
    cmd = vbench_command(cfg, Path(out) / "videos", out, full_info)  # checks env and weights before staging
    missing = missing_videos(video_dir, full_info, cfg.eval.samples_per_prompt)
    if missing:
        raise FileNotFoundError(f"{video_dir}: {len(missing)} VBench standard-suite videos missing (e.g. "
                                f"{missing[0]!r}); sample eval.suite=vbench with eval.max_prompts=0")
    stage_videos(video_dir, Path(out) / "videos")
    subprocess.run(cmd, check=True, env={**os.environ, **vbench_env(cfg)})
    return parse_results(results_path(out))


def parse_results(path: Path) -> dict[str, float]:
    """VBench's <name>_eval_results.json ({dimension: [mean, per-video list]}) -> {dimension: mean}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VBench results file not found (did the VBench run fail? see its log)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{dimension: [mean, per-video results]}}")
    out = {}
    for dim, val in data.items():
        if dim not in NORMALIZE:
            raise ValueError(f"{path}: unknown VBench dimension {dim!r}; expected names from {VBENCH_DIMENSIONS}")
        score = val[0] if isinstance(val, (list, tuple)) and val else val
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"{path}: dimension {dim!r} has no numeric mean score (got {type(score).__name__})")
        out[dim] = float(score)
    return out
