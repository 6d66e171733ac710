"""Model-agnostic pyramidal flow matching (docs/method.md §1-§3): schedules, training paths, the temporal
pyramid, samplers and cost accounting. Takes velocity callables; never imports pyramid_repro.models."""

from pyramid_repro.flow.ops import corrective_noise, downsample, downsample_noise, upsample
from pyramid_repro.flow.paths import TrainingSample, pyramid_latents, sample_stage, training_path
from pyramid_repro.flow.sampler import guided, jump, local_sigmas, sample
from pyramid_repro.flow.schedule import PyramidSchedule, renoise_coefficients
from pyramid_repro.flow.temporal import HistoryFrame, build_history, history_stages

__all__ = [
    "HistoryFrame", "PyramidSchedule", "TrainingSample", "build_history", "corrective_noise", "downsample",
    "downsample_noise", "guided", "history_stages", "jump", "local_sigmas", "pyramid_latents", "renoise_coefficients",
    "sample", "sample_stage", "training_path", "upsample",
]
