"""EvalCrafter adapter (paper Table 6: EvalCrafter's 17 raw metrics).

EvalCrafter (Liu et al., CVPR 2024) runs its own models (DOVER, CLIP, BLIP, RAFT, detectors, ...) from a local
installation; this suite never downloads them. Its `eval_from_metrics.py` collects the per-metric logs into
`<install>/results/final_result.txt`, a log with one line `Metrics: {name: value, ...}` (the raw metrics, in
EvalCrafter's scaling) and one line `Results: Visual Quality q, Text-Video Alignment a, Motion Quality m, Temporal
Consistency t, Total T` (EvalCrafter's own aggregation, a human-aligned linear model of the metrics). The adapter
reads both: raw metrics under the Table 6 names, and EvalCrafter's aspect scores as EvalCrafter computed them.

`aggregate` recomputes the four aspect scores and their sum from the 17 metrics with EvalCrafter's published
linear models (the weights and intercepts of its eval_from_metrics.py, fitted to its human ratings), so the
aspects of any metric set — e.g. the paper's Table 6 — can be had without running EvalCrafter, and a
final_result.txt whose Results line disagrees with its own Metrics line is caught. `score_evalcrafter` stages
the sampler's videos in EvalCrafter's layout (`0000.mp4`, ... in prompt order), runs its `start.sh` in the local
installation and reads the result.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

from pyramid_repro.config import Config, ConfigError

# EvalCrafter's metric keys -> the names in the paper's Table 6 (replication/paper/table6.csv)
TABLE6_NAMES: dict[str, str] = {
    "VQA_A": "VQA_A", "VQA_T": "VQA_T", "IS": "IS", "clip_temp_score": "CLIP-Temp", "warping_error": "Warping error",
    "face_consistency_score": "Face consistency", "action_score": "Action score",
    "motion_ac_score": "Motion AC score", "flow_score": "Flow score", "clip_score": "CLIP score",
    "blip_bleu": "BLIP-BLEU", "sd_score": "SD score", "detection_score": "Detection score",
    "color_score": "Color score", "count_score": "Count score", "ocr_score": "OCR score",
    "celebrity_id_score": "Celebrity ID score",
}
ASPECTS: dict[str, str] = {"Visual Quality": "visual_quality", "Text-Video Alignment": "text_video_alignment",
                           "Motion Quality": "motion_quality", "Temporal Consistency": "temporal_consistency",
                           "Total": "total"}


# EvalCrafter's aspect models (eval_from_metrics.py): aspect = 100 * (scale * w . x + intercept), with x built from
# the raw metrics (see `aggregate` for the scaling of each input). (weights, weight scale, intercept)
_ASPECT_MODELS: dict[str, tuple[tuple[float, ...], float, float]] = {
    "visual_quality": ((0.03004555, 0.02887537, -0.01382558), 5.0, 0.08707462696457707 * 5),
    "temporal_consistency": ((2.92492244, 0.45475678, 0.17561504), 5.0, -3.42274050899774 * 5),
    "motion_quality": ((-0.01641512, -0.01340959, -0.10517075), 5.0, 0.1297562020899355 * 5),
    "text_video_alignment": ((-0.0701577, 0.02561424, 0.05566109, 0.0173974, -0.020954, 0.03069167, 0.00372351,
                              0.22686202), 5.0, -0.30683181901390977),
}
# metrics that final_result.txt (and Table 6) print unscaled; every other one is printed x100
_PRINTED_UNSCALED = {"VQA_A", "VQA_T", "IS", "Flow score", "Warping error"}


def aggregate(metrics: dict[str, float]) -> dict[str, float]:
    """EvalCrafter's aspect scores (visual quality, text-video alignment, motion quality, temporal consistency) and
    their sum `total`, from the 17 metrics as Table 6 / final_result.txt print them. An aspect whose inputs are
    missing (not measured, e.g. no faces) is NaN, and so is the total."""
    def raw(name: str) -> float:
        v = metrics.get(name, math.nan)
        return float(v) if name in _PRINTED_UNSCALED else float(v) / 100

    inputs = {
        "visual_quality": (raw("VQA_A") / 100, raw("VQA_T") / 100, raw("IS") / 100),
        "temporal_consistency": (raw("CLIP-Temp"), 1 - raw("Warping error"), raw("Face consistency")),
        "motion_quality": (raw("Action score"), raw("Motion AC score"), raw("Flow score") / 100),
        "text_video_alignment": (raw("CLIP score"), raw("BLIP-BLEU"), raw("SD score"), raw("Detection score"),
                                 raw("Color score"), raw("Count score"), 1 - raw("OCR score"),
                                 1 - raw("Celebrity ID score")),
    }
    out = {}
    for aspect, (w, scale, intercept) in _ASPECT_MODELS.items():
        out[aspect] = 100 * (scale * sum(a * b for a, b in zip(w, inputs[aspect])) + intercept)
    out["total"] = sum(out.values())
    return out


def installation(cfg: Config) -> Path:
    """The local EvalCrafter folder (eval.evalcrafter_path) with its checkpoints; clear error otherwise."""
    root = cfg.eval.evalcrafter_path
    if not root or not Path(root).is_dir():
        raise ConfigError(f"eval.evalcrafter_path={root!r}: the evalcrafter backend needs a local EvalCrafter "
                          "installation (code + checkpoints/); it is never downloaded by this suite")
    if not (Path(root) / "checkpoints").is_dir():
        raise ConfigError(f"{Path(root) / 'checkpoints'}: EvalCrafter's model checkpoints not found (its own "
                          "checkpoints/download.sh; never run by this suite)")
    return Path(root)


def parse_final_result(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """EvalCrafter's final_result.txt -> (raw metrics by Table 6 name, aspect scores). NaN metrics (not measured,
    e.g. no faces in the videos) are left out."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EvalCrafter's final_result.txt not found; run EvalCrafter's metric "
                                "scripts on the videos, then its eval_from_metrics.py")
    text = path.read_text()
    m = re.search(r"Metrics: (\{.*?\})", text)
    if not m:
        raise ValueError(f"{path}: no 'Metrics: {{...}}' line (expected EvalCrafter's eval_from_metrics.py log)")
    try:  # the dict is printed by Python; nan is not a literal
        raw = ast.literal_eval(re.sub(r"\bnan\b", "None", m.group(1)))
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable Metrics line: {e}") from None
    unknown = sorted(set(raw) - set(TABLE6_NAMES))
    if unknown:
        raise ValueError(f"{path}: unknown EvalCrafter metric(s) {unknown}; expected {sorted(TABLE6_NAMES)}")
    metrics = {TABLE6_NAMES[k]: float(v) for k, v in raw.items() if v is not None and not math.isnan(float(v))}
    aspects = {}
    r = re.search(r"Results: (.*)", text)
    if r:
        for name, key in ASPECTS.items():
            a = re.search(rf"{name} (-?[0-9.]+)", r.group(1))
            if a:
                aspects[key] = float(a.group(1))
    return metrics, aspects


def check_reported_aspects(computed: dict[str, float], reported: dict[str, float], source: Path) -> None:
    """EvalCrafter's printed aspects must match `aggregate` of its printed metrics (to its rounding: 2 decimals of
    the metrics feed the aspects, the total is printed without decimals)."""
    for key, value in reported.items():
        mine = computed.get(key, math.nan)
        tol = 1.0 if key == "total" else 0.5
        if not math.isnan(mine) and abs(mine - value) > tol:
            raise ValueError(f"{source}: EvalCrafter reports {key} {value:.2f} but its own Metrics line gives "
                             f"{mine:.2f}; the file mixes results of different runs")


def stage_videos(video_dir: Path, dest: Path) -> list[Path]:
    """Link the first sample of every EvalCrafter prompt (samples.json of the sampler, prompt ids
    `evalcrafter_NNNN`) into `dest` as EvalCrafter expects them: `NNNN.mp4`."""
    index = Path(video_dir) / "samples.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: the sampler's index is missing; sample with eval.suite=evalcrafter first")
    records = [r for r in json.loads(index.read_text())["samples"] if r["sample_index"] == 0]
    if not records or not all(r["prompt_id"].startswith("evalcrafter_") for r in records):
        raise ValueError(f"{index}: expected videos of the evalcrafter suite (prompt ids evalcrafter_NNNN)")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    out = []
    for r in records:
        src = Path(r["path"]) if Path(r["path"]).is_absolute() else Path(video_dir) / r["path"]
        if not src.is_file():
            raise FileNotFoundError(f"{src}: listed in {index} but missing")
        link = dest / f"{r['prompt_id'].split('_', 1)[1]}.mp4"
        os.symlink(src.resolve(), link)
        out.append(link)
    return sorted(out)


def command(root: Path, videos: Path) -> list[str]:
    """EvalCrafter's whole pipeline as its README runs it (inside its own environment / docker image)."""
    return ["bash", str(Path(root) / "start.sh"), str(Path(root)), str(Path(videos))]


def score_evalcrafter(cfg: Config, video_dir: Path) -> dict:
    """Metrics of the `evalcrafter` backend: stage the videos, run EvalCrafter's start.sh in the local installation
    (its own models and environment; GPU), read results/final_result.txt, recompute and check the aspects."""
    root = installation(cfg)
    result = root / "results" / "final_result.txt"
    staged = stage_videos(Path(video_dir), Path(video_dir) / "evalcrafter_videos")
    if result.exists():
        result.unlink()  # never read a previous run's numbers
    cmd = command(root, Path(video_dir) / "evalcrafter_videos")
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"EvalCrafter failed ({' '.join(cmd)}, exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    metrics, reported = parse_final_result(result)
    computed = aggregate(metrics)
    check_reported_aspects(computed, reported, result)
    # aspects are EvalCrafter's own scale (not VBench percentages): kept out of `aggregate`, which Table 1 reads
    return {"dimensions": metrics, "aggregate": {}, "fid": None,
            "extra": {"evalcrafter_aspects": computed, "evalcrafter_aspects_reported": reported,
                      "n_videos": len(staged), "video_dir": str(video_dir), "results_file": str(result),
                      "command": cmd}}
