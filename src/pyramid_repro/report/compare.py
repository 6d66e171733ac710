"""`pyramid-repro compare`: measure a new DiT checkpoint against the paper and this run's `pyramid`.

Checks that the checkpoint fits the profile (latent channels, patch size, text dimensions: a mismatch is an error
naming the config key and both values), samples the profile's prompt suite with it under the `pyramid` sampler
settings, scores it with the chosen backend, and prints/renders a table with its row and the deltas to the
paper's Pyramid Flow row (only for a backend that is VBench) and to this run's `pyramid` (same backend).
Sampling and scoring are injectable (`sample_fn`, `score_fn`) so the comparison logic is tested without a model;
by default they are eval/sample.py `run` and eval/score.py `score_experiment`. Besides config.json, the resolved
Config saved beside the checkpoint (train_config.yaml) is checked key by key (ARCHITECTURE_KEYS).

Its command line (options, messages) is commands/compare.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from pyramid_repro.config import Config, ConfigError
from pyramid_repro.eval import release
from pyramid_repro.eval.method import MISSING, TRAIN_CONFIG, get_dotted, read_train_config, resolve_method
from pyramid_repro.eval.sample import sample_release
from pyramid_repro.eval.sample import run as sample_run
from pyramid_repro.eval.score import score_experiment
from pyramid_repro.eval.uncertainty import separated
from pyramid_repro.report.paper import load_paper_table
from pyramid_repro.report.render import _draw_table, ablation_deltas, interval_columns, with_intervals
from pyramid_repro.report.style import footer

METRICS = ("total", "quality", "semantic", "fid")


def check_compatible(checkpoint: Path, cfg: Config, text_dim: int | None = None,
                     pooled_dim: int | None = None) -> dict:
    """The checkpoint's config.json against the profile; returns it. Raises ConfigError naming the mismatch."""
    f = Path(checkpoint) / "config.json"
    if not f.is_file():
        raise ConfigError(f"{checkpoint}: not a DiT checkpoint folder (no config.json; expected a folder written "
                          "by save_pretrained, e.g. results/<profile>/pyramid/dit/<stage>/final)")
    c = json.loads(f.read_text())
    wanted = {"in_channels": ("vae.latent_channels", cfg.vae.latent_channels),
              "patch_size": ("model.patch_size", cfg.model.patch_size)}
    if text_dim is not None:
        wanted["text_dim"] = ("text_encoder (token dimension)", text_dim)
    if pooled_dim is not None:
        wanted["pooled_dim"] = ("text_encoder (pooled dimension)", pooled_dim)
    for key, (cfg_key, value) in wanted.items():
        if key in c and c[key] != value:
            raise ConfigError(f"{f}: {key}={c[key]} but profile '{cfg.profile}' has {cfg_key}={value}; compare "
                              "a checkpoint with the profile it was trained for (--profile)")
    tc = Path(checkpoint) / TRAIN_CONFIG
    if tc.is_file():
        check_train_config(tc, cfg)
    return c


# config keys that fix the shapes of a DiT checkpoint or what its inputs mean: they must equal the profile's
ARCHITECTURE_KEYS = ("model.depth", "model.hidden_size", "model.num_heads", "model.patch_size", "model.mlp_ratio",
                     "model.qk_norm", "vae.latent_channels", "vae.spatial_compression", "vae.temporal_compression",
                     "text_encoder.kind", "text_encoder.max_tokens")


def check_train_config(path: Path, cfg: Config, keys: tuple[str, ...] = ARCHITECTURE_KEYS) -> None:
    """The resolved Config saved beside a checkpoint (train_config.yaml) against the profile: every key of `keys`
    must match, else ConfigError naming the key and both values."""
    saved = read_train_config(path)
    ours = cfg.to_dict()
    for key in keys:
        a, b = get_dotted(saved, key), get_dotted(ours, key)
        if a is MISSING:
            continue  # older checkpoints may not record every key; config.json still guards the shapes
        if a != b:
            raise ConfigError(f"{path}: {key}={a!r} but profile '{cfg.profile}' has {key}={b!r}; the checkpoint "
                              "was trained for a different model/VAE/text encoder (pass its --profile/--set)")


def _row(name: str, doc: dict | None) -> dict:
    if doc is None:
        return {"model": name}
    agg = doc.get("aggregate") or {}
    iv = interval_columns(doc)  # bootstrap intervals of the proxy numbers (eval/uncertainty.py)
    return {"model": name, "backend": doc.get("backend"), "total": agg.get("total"), "quality": agg.get("quality"),
            "semantic": agg.get("semantic"), "fid": doc.get("fid"),
            **{f"{k}_{e}": iv[f"{k}_{e}"] for k in ("total", "fid") for e in ("lo", "hi")}}


def _noise_note(a: dict, b: dict) -> str:
    """Whether the new checkpoint's and this run's pyramid's intervals separate, metric by metric."""
    words = []
    for k in ("total", "fid"):
        ia, ib = [a.get(f"{k}_lo"), a.get(f"{k}_hi")], [b.get(f"{k}_lo"), b.get(f"{k}_hi")]
        if all(v is not None and v == v for v in ia + ib):
            words.append(f"{k}: {'outside' if separated(ia, ib) else 'within'} the noise")
    return "; ".join(words)


def comparison_table(new: dict, ours: dict | None, backend: str, name: str) -> pd.DataFrame:
    """Rows: the paper's Pyramid Flow (VBench), this run's pyramid, the new checkpoint, and the deltas."""
    p = load_paper_table("table1").set_index("model").loc["Pyramid Flow (ours)"]
    paper = {"model": "Pyramid Flow (paper, VBench)", "backend": "vbench (paper)", "total": p.total,
             "quality": p.quality, "semantic": p.semantic, "fid": None}
    rows = [paper, _row("pyramid (this run)", ours), _row(name, new)]
    n = rows[-1]
    if ours is not None:
        rows.append({"model": f"Δ {name} − pyramid (this run)", "backend": backend,
                     **{k: (n[k] - rows[1][k]) if n.get(k) is not None and rows[1].get(k) is not None else None
                        for k in METRICS}, "note": _noise_note(n, rows[1])})
    if backend == "vbench":
        rows.append({"model": f"Δ {name} − paper", "backend": backend,
                     **{k: (n[k] - paper[k]) if n.get(k) is not None and paper.get(k) is not None else None
                        for k in METRICS}})
    return pd.DataFrame(rows)


def default_name(checkpoint: Path, release_run=None) -> str:
    """The checkpoint's name in file names (compare_<name>.csv): release-<resolution> for the authors' release,
    finetuned-<resolution>-<experiment> for a checkpoint fine-tuned from it, else its folder's name."""
    return release_run.name if release_run is not None else Path(checkpoint).resolve().name


def _sampled_as(videos: Path) -> tuple[dict | None, list[tuple]]:
    """(protocol, [(prompt id, sample index, seed)]) of a samples.json folder; (None, []) without one."""
    index = Path(videos) / "samples.json"
    if not index.is_file():
        return None, []
    doc = json.loads(index.read_text())
    return doc.get("protocol"), sorted((s["prompt_id"], s["sample_index"], s["seed"]) for s in doc["samples"])


def with_release_row(table: pd.DataFrame, cfg: Config, run, new: dict, videos: Path,
                     backend: str) -> tuple[pd.DataFrame, list[str]]:
    """A fine-tuned release's table with the release's own row (its `compare` of this profile and backend:
    results/<profile>/compare/release-<resolution>/) and the paired difference fine-tuned − release: resampled
    prompt by prompt over the same videos (report/render.py `ablation_deltas`, the ablations' paired test) when both
    were generated under one protocol from the same prompts and seeds, else the marginal difference, noted. Without
    the release's samples the table is unchanged and the line returned says how to make them."""
    work = cfg.layout.compare(run.release_name)
    f = work / f"{backend}.json"
    h, w = run.size
    if not f.is_file():
        return table, [f"no paired row for the release: sample it first with `pyramid-repro compare --checkpoint "
                     f"{run.root} --resolution {run.resolution} --size {w}x{h} --latent-frames {run.latent_frames} "
                     f"--backend {backend}` (same profile)"]
    base = {**json.loads(f.read_text()), "_path": str(f), "experiment": run.release_name}
    ours = {**new, "_path": str(Path(videos).parent / f"{backend}.json")}
    rel_label = json.loads((work / "samples" / "samples.json").read_text()).get("model", run.release_name) \
        if (work / "samples" / "samples.json").is_file() else run.release_name
    same = _sampled_as(videos) == _sampled_as(work / "samples") and _sampled_as(videos)[1]
    deltas = ablation_deltas(cfg, ours, base) if same else {}
    row = {"model": f"Δ {run.name} − {run.release_name}", "backend": backend}
    n, b = _row(run.label, new), _row(rel_label, base)
    for k in METRICS:
        row[k] = n[k] - b[k] if n.get(k) is not None and b.get(k) is not None else None
    words = []
    for col, d in deltas.items():
        k = "total" if col.startswith("total (") else "fid" if col.startswith("FID (") else None
        if k is not None and d.get(" paired"):
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = d[""], d[" lo"], d[" hi"]
            words.append(f"{k}: paired, {'outside' if d[' separated'] else 'within'} the noise")
    row["note"] = "; ".join(words) or ("marginal (no per-video units)" if same else
                                       "marginal: not the same protocol, prompts and seeds as the release's samples")
    rows = table.to_dict("records")
    at = next(i for i, r in enumerate(rows) if r["model"] == run.label)
    return pd.DataFrame(rows[:at] + [b] + rows[at:at + 1] + [row] + rows[at + 1:]), []


def protocol_lines(doc: dict | None, name: str) -> list[str]:
    """What the new row's score was generated and scored under (the metrics JSON's `protocol`, recorded by the
    VBench backend; else the samples' own), one line each, for printing under the compare table."""
    proto = (doc or {}).get("protocol")
    if not proto:
        return [f"{name}: no protocol recorded (a proxy backend; see samples.json)"]
    fields = ("vbench_version", "vbench_mode", "prompt_set", "prompt_suffix", "fps", "frames", "width", "height")
    shown = ", ".join(f"{k}={proto[k]!r}" for k in fields if k in proto)
    paper = release.PAPER_PROTOCOL.to_dict()
    ref = ", ".join(f"{k}={paper[k]!r}" for k in ("vbench_mode", "prompt_set", "fps", "frames", "width", "height"))
    return [f"{name}: {shown}", f"paper (Pyramid Flow, VBench 81.72): {ref}"]


def _protocol_of(doc: dict, videos: Path) -> dict | None:
    """The protocol of a score: the metrics JSON's (VBench backend), else samples.json's (how the videos were
    made)."""
    if doc.get("protocol"):
        return doc["protocol"]
    index = Path(videos) / "samples.json"
    if index.is_file():
        return json.loads(index.read_text()).get("protocol")
    return None


def compare(cfg: Config, checkpoint: Path, backend: str, name: str | None = None,
            sample_fn: Callable[[Config, Path, Path], Path] | None = None,
            score_fn: Callable[[Config, Path, str, Path], dict] | None = None, release_run=None,
            experiment: str | None = None, override_method: bool = False) -> pd.DataFrame:
    """Sample, score and tabulate `checkpoint`. `release_run` (eval/release.py ReleaseRun): the checkpoint is the
    authors' release, sampled under its official settings; its row names the model and the settings. A suite
    checkpoint is sampled with its own method (eval/method.py `resolve_method`: the train_config.yaml beside it;
    `experiment` / the config's --set must agree unless `override_method`); its row's `method` column names it.
    Every row's `protocol` column says whether its fps, frames, size or VBench mode differ from the paper's."""
    tuned = None if release_run is not None else release.settle_finetuned(cfg, Path(checkpoint), experiment,
                                                                         override_method)
    name = name or default_name(checkpoint, release_run or (tuned and tuned[1]))
    if release_run is not None:
        label = release_run.label
        method_label = release_run.preset.describe()
        sample_fn = sample_fn or (lambda c, ck, out: sample_release(c, release_run, c.eval.suite, out))
    elif tuned is not None:  # fine-tuned from a release: sampled as the release (eval/release.py)
        cfg, run, method_label = tuned
        label = run.label
        check_compatible(checkpoint, cfg)
    else:
        label = name
        check_compatible(checkpoint, cfg)
        cfg, method = resolve_method(cfg, Path(checkpoint), experiment, override_method)
        method_label = method.label
    work = cfg.layout.compare(name)
    videos = work / "samples"
    sample_fn = sample_fn or (lambda c, ck, out: sample_run(c, None, c.eval.suite, out, ck,
                                                            override_method=override_method))
    score_fn = score_fn or (lambda c, vids, b, out: score_experiment(c, "pyramid", b, vids, out))
    sample_fn(cfg, Path(checkpoint), videos)
    new = score_fn(cfg, videos, backend, work / f"{backend}.json")
    ours_f = cfg.layout.metrics("pyramid", backend)
    ours = json.loads(ours_f.read_text()) if ours_f.is_file() else None
    table = comparison_table(new, ours, backend, label)
    extra: list[str] = []
    if tuned is not None:
        table, extra = with_release_row(table, cfg, tuned[1], new, videos, backend)
    table["method"] = None
    table.loc[table["model"] == label, "method"] = method_label
    proto = _protocol_of(new, videos)
    diffs = release.protocol_differences(proto)
    table["protocol"] = None
    table.loc[table["model"].str.startswith("Pyramid Flow (paper"), "protocol"] = "paper's"
    table.loc[table["model"] == label, "protocol"] = (
        "not recorded" if not proto else "as the paper's" if not diffs
        else "differs from the paper's: " + ", ".join(diffs))
    if release_run is not None:
        table["settings"] = None
        table.loc[table["model"] == label, "settings"] = release_run.preset.describe()
    table.attrs["protocol_lines"] = protocol_lines(new, label) + extra
    table.attrs["name"] = name  # in the file names below
    out = cfg.layout.reports
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"compare_{name}.csv", index=False)
    render_comparison(table, cfg, out / f"compare_{name}.pdf")
    return table


def render_comparison(table: pd.DataFrame, cfg: Config, path: Path) -> Path:
    """The comparison table as a PDF with the run's provenance footer; a release's sampler settings go under the
    table (too long for a column)."""
    settings = [v for v in table.get("settings", pd.Series(dtype=object)).dropna().unique() if v]
    lines = list(table.attrs.get("protocol_lines", []))
    for _, r in table.iterrows():  # long text: under the table, not in a column
        if isinstance(r.get("method"), str) and r.get("model") and not str(r["model"]).startswith("Δ"):
            lines.append(f"{r['model']} sampled with {r['method']}")
        if isinstance(r.get("protocol"), str) and r["protocol"].startswith("differs"):
            lines.append(f"{r['model']}: protocol {r['protocol']}")
    table = table.drop(columns=["settings", "method", "protocol"], errors="ignore")
    if "note" in table:
        table = table.assign(note=table["note"].fillna(""))
    cols = [c for c in table.columns if not c.endswith(("_lo", "_hi"))]
    note = ("Deltas to the paper only for VBench scores; proxy backends are compared with this run's pyramid only. "
            "[lo, hi]: 95% bootstrap intervals over the generated videos; a delta is 'within the noise' when the "
            "two intervals overlap.")
    if settings:
        note += " Sampled with " + "; ".join(settings) + "."
    for line in lines:
        note += " " + line + "."
    _draw_table(with_intervals(table, cols), f"Checkpoint comparison (profile {cfg.profile})", Path(path), note,
                footer(cfg))
    return Path(path)
