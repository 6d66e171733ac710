"""`pyramid-repro score`: score an experiment's sampled videos with one backend ->
results/<profile>/<experiment>/metrics/<backend>.json (backend name and label, provenance, n_videos).

Its command line (options, messages) is commands/score.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pyramid_repro.backend_specs import backend_spec
from pyramid_repro.config import Config
from pyramid_repro.data.video_io import read_video
from pyramid_repro.eval.backends import score
from pyramid_repro.eval.prompts import load_suite
from pyramid_repro.layout import units_path
from pyramid_repro.provenance import provenance, write_json, write_npz


def score_experiment(cfg: Config, experiment: str, backend: str, videos: Path | None = None,
                     out: Path | None = None) -> dict:
    suite = cfg.eval.suite
    videos = videos or cfg.layout.samples(experiment, suite)
    index = videos / "samples.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no samples index; run `pyramid-repro sample --experiment {experiment}`")
    samples = json.loads(index.read_text())["samples"]
    by_id = {p.id: p for p in load_suite(suite, cfg)}
    if not samples:
        raise ValueError(f"{index}: 'samples' is empty; nothing to score")
    vids, prompts = [], []
    for s in samples:
        if s["prompt_id"] not in by_id:
            raise KeyError(f"{index}: prompt_id {s['prompt_id']!r} is not in suite {suite!r}")
        if not (videos / s["path"]).is_file():
            raise FileNotFoundError(f"{index}: sample {s['path']!r} (prompt {s['prompt_id']!r}) not found in {videos}")
        if backend_spec(backend).reads == "frames":  # vbench / evalcrafter read the files themselves
            vids.append(read_video(videos / s["path"])[0])
        prompts.append(by_id[s["prompt_id"]])
    result = score(backend, vids, prompts, cfg, videos)
    units = result.pop("units", None)
    out = Path(out or cfg.layout.metrics(experiment, backend))
    prov = provenance(cfg, backend=backend, experiment=experiment)
    doc = {"backend": backend, "label": backend_spec(backend).label, "experiment": experiment, "profile": cfg.profile,
           "config_hash": cfg.config_hash(), "commit": prov.get("commit"), "created_utc": prov.get("created_utc"),
           "suite": suite, "n_videos": len(samples), **result,
           "units_file": units_path(out).name if units is not None else None, "provenance": prov}
    if units is not None:
        write_units(units_path(out), units, samples)
    elif units_path(out).exists():  # a stale file of an earlier run must not be paired with these metrics
        units_path(out).unlink()
    write_json(out, doc)
    return doc


# the entries `write_units` adds to a backend's units: which video each entry is, not a value of it
UNIT_INDEX = ("prompt_id", "sample", "path")


def write_units(path: Path, units: dict[str, np.ndarray], samples: list[dict]) -> None:
    """The per-video data of a scoring run (`units` from the backend, one entry per video or, for features, per
    frame with `frame_video`), with each video's prompt id, sample index and file: the units that paired
    comparisons resample (eval/uncertainty.py `paired_difference`). Written atomically."""
    arrays = {"prompt_id": np.array([s["prompt_id"] for s in samples]),
              "sample": np.array([int(s.get("sample_index", 0)) for s in samples]),
              "path": np.array([s["path"] for s in samples]), **units}
    write_npz(path, arrays)


def read_units(path: Path) -> dict[str, np.ndarray]:
    """A units file written by `write_units` (arrays by name); a FileNotFoundError names the file and the command
    that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: per-video units not found (written by `pyramid-repro score` since the "
                                "paired comparisons; rescore to create it)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
