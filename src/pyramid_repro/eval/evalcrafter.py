"""EvalCrafter adapter (paper Table 6: EvalCrafter's 17 raw metrics).

EvalCrafter (Liu et al., CVPR 2024) runs its own models (DOVER, CLIP, BLIP, RAFT, detectors, ...) from a local
installation; this suite never downloads them. Its `eval_from_metrics.py` collects the per-metric logs into
`<install>/results/final_result.txt`, a log with one line `Metrics: {name: value, ...}` (the raw metrics, in
EvalCrafter's scaling) and one line `Results: Visual Quality q, Text-Video Alignment a, Motion Quality m, Temporal
Consistency t, Total T` (EvalCrafter's own aggregation, a human-aligned linear model of the metrics). The adapter
reads both: raw metrics under the Table 6 names, and EvalCrafter's aspect scores as EvalCrafter computed them.
"""

from __future__ import annotations

import ast
import math
import re
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


def score_evalcrafter(cfg: Config, video_dir: Path) -> dict:
    """Metrics of the `evalcrafter` backend from the local installation's results (never runs models itself)."""
    root = installation(cfg)
    metrics, aspects = parse_final_result(root / "results" / "final_result.txt")
    # aspects are EvalCrafter's own scale (not VBench percentages): kept out of `aggregate`, which Table 1 reads
    return {"dimensions": metrics, "aggregate": {}, "fid": None,
            "extra": {"evalcrafter_aspects": aspects, "video_dir": str(video_dir),
                      "results_file": str(root / "results" / "final_result.txt")}}
