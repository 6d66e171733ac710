"""Scoring backends, one interface: `score(video_dir, samples, prompts, cfg) -> dict` of the metrics JSON.

* `synthetic` (offline, "synthetic proxy (not VBench)"): VBench-analogue dimensions read against the synthetic
  world's known factors with the probe network and the world's known palette:
  object_class / color / multiple_objects (probe detections per frame), spatial_relationship (centroids of the
  prompted colours), dynamic_degree (is the prompted object displaced), motion_smoothness (VBench's idea with
  linear frame interpolation instead of a learnt interpolator: odd frames predicted from their neighbours),
  subject_consistency (cosine similarity of probe features to the first and previous frame, times the fraction of
  frames in which the probe sees the prompted subject),
  background_consistency (border pixels vs the first frame), temporal_flickering (VBench's formula:
  (255 - mean |frame difference|) / 255 on static prompts). Aggregated the way VBench aggregates, over the
  dimensions present; the rest are listed as missing.
* `fid-probe` (offline): Fréchet distance (clean-fid's, see `frechet_distance`) between probe features of generated
  frames and of real held-out frames.
* `clean-fid`: FID and KID (KID in `extra.kid`) with clean-fid's Inception from a local file
  (eval.inception_path); never downloads.
* `vbench`: the official VBench in its own environment (eval/vbench.py).
* `evalcrafter`: EvalCrafter's raw metrics and aspect scores from a local installation (eval/evalcrafter.py).

The synthetic, fid-probe and clean-fid backends also give bootstrap intervals (`intervals`, described by
`interval`; eval/uncertainty.py): over the generated videos, resampled prompt by prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pyramid_repro.config import Config, ConfigError, replication_dir
from pyramid_repro.data.datasets import ClipDataset
from pyramid_repro.data.synthetic import COLOURS, DIRECTIONS, RELATIONS, Factors
from pyramid_repro.device import config_device
from pyramid_repro.eval import uncertainty as uq
from pyramid_repro.eval import vbench as vb
from pyramid_repro.eval.evalcrafter import score_evalcrafter
from pyramid_repro.eval.probe import _vocab, load_probe, probe_outputs

# the registry's facts (pyramid_repro/backend_specs.py), under the names eval/score.py reads


def frames_to_tensor(video: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (T, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def colour_mask(video: np.ndarray, colour: str, tol: float = 60.0) -> np.ndarray:
    """(T, H, W) pixels within `tol` (RGB distance) of a palette colour."""
    ref = np.array(COLOURS[colour], dtype=np.float32)
    return np.linalg.norm(video.astype(np.float32) - ref, axis=-1) < tol


def blob_present(mask: np.ndarray, min_pixels: int = 2, coherence: float = 0.5) -> np.ndarray:
    """(T,) bool: the frame's colour mask is an object, not scattered pixels: at least `min_pixels` pixels and at
    least `coherence` of them with a 4-neighbour also in the mask (a solid shape has nearly all; uniform noise,
    where a palette colour hits isolated pixels, has almost none)."""
    m = mask.astype(bool)
    nb = np.zeros_like(m)
    nb[:, 1:] |= m[:, :-1]
    nb[:, :-1] |= m[:, 1:]
    nb[:, :, 1:] |= m[:, :, :-1]
    nb[:, :, :-1] |= m[:, :, 1:]
    n = m.sum((1, 2))
    linked = (m & nb).sum((1, 2))
    return (n >= min_pixels) & (linked >= coherence * np.maximum(n, 1))


def object_centroids(video: np.ndarray, colour: str) -> np.ndarray:
    """(T, 2) centroid of the palette colour's pixels in frames where they form an object (`blob_present`), NaN
    elsewhere."""
    m = colour_mask(video, colour)
    c = centroids(m)
    c[~blob_present(m)] = np.nan
    return c


def centroids(mask: np.ndarray) -> np.ndarray:
    """(T, 2) centroid (x, y) in pixels per frame; NaN where the mask is empty."""
    T, H, W = mask.shape
    ys, xs = np.mgrid[0:H, 0:W]
    n = mask.sum((1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (mask * xs).sum((1, 2)) / n
        cy = (mask * ys).sum((1, 2)) / n
    return np.stack([cx, cy], 1)


def flicker_score(video: np.ndarray) -> float:
    """VBench temporal flickering: (255 - mean absolute difference of consecutive frames) / 255."""
    d = np.abs(np.diff(video.astype(np.float32), axis=0)).mean() if len(video) > 1 else 0.0
    return float((255.0 - d) / 255.0)


def jump_blockiness(video: np.ndarray, latent_pixel: int, eps: float = 0.01) -> float:
    """Block artifacts at a pyramid's jump points (paper Sec. 3.1, docs/method.md §2.4: the nearest-neighbour
    up-sampling of a stage's latent copies each value into a 2x2 block, whose edges corrective noise is there to
    hide). A jump only ever leaves edges on the boundaries of even latent-pixel blocks (pixel positions that are
    multiples of 2 x `latent_pixel`; an earlier jump's 4x4 blocks share them), never on the latent-pixel boundaries
    half-way between them (odd multiples of `latent_pixel`). With the mean squared difference of neighbouring pixels
    across each edge position (rows and columns, every frame and channel), the statistic is

        log((J + A) / (B + A))

    J: the mean over the jump-point edges; B: the mean over the same edges of the two latent-pixel edges beside
    each (`latent_pixel` before and after it), so that content that is denser in some part of the frame weighs
    alike on both; A: the mean over every edge position (plus `eps`, squared pixel levels, for a flat image),
    which keeps a frame with few edges from swinging to +-inf. J and B are both latent-pixel boundaries, so whatever
    the decoder does at every latent pixel (its own grid) cancels: about 0 for a clean image, for a bilinear
    up-sampling and for a model without jump points (full-sequence flow matching); positive where the frames step
    at the jump-point edges, up to about log(1 + edges / jump-point edges) for a nearest up-sampling of the latent
    grid (`tests/test_claims.py`). `latent_pixel`: pixels per latent pixel (`vae.spatial_compression`; 1 for images
    without a VAE)."""
    v = np.asarray(video, dtype=np.float64)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4 or v.shape[-1] not in (1, 3):
        raise ValueError(f"jump_blockiness: expected frames (T, H, W, C) or one frame (H, W, C), got {video.shape}")
    H, W = v.shape[1:3]
    if latent_pixel < 1 or 3 * latent_pixel >= min(H, W):
        raise ValueError(f"jump_blockiness: latent_pixel {latent_pixel} must be at least 1 and below a third of the "
                         f"frame ({H}x{W}), so that a jump-point edge has a latent-pixel edge on either side")
    # energy of the pair (j-1, j) at index j-1, per column position and per row position
    across = [((np.diff(v, axis=2) ** 2).mean(axis=(0, 1, 3)), W), ((np.diff(v, axis=1) ** 2).mean(axis=(0, 2, 3)), H)]
    jump, beside = [], []
    for energy, n in across:
        for j in range(2 * latent_pixel, n - latent_pixel, 2 * latent_pixel):
            jump.append(energy[j - 1])
            beside.append((energy[j - latent_pixel - 1] + energy[j + latent_pixel - 1]) / 2)
    every = float(np.concatenate([e for e, _ in across]).mean()) + eps
    return float(np.log((np.mean(jump) + every) / (np.mean(beside) + every)))


def latent_pixel_size(cfg: Config) -> int:
    """Pixels per side of one latent pixel in a decoded frame (`vae.spatial_compression`): the grid on which
    `jump_blockiness` looks for the jump points' blocks."""
    return cfg.vae.spatial_compression


def motion_smoothness_score(video: np.ndarray) -> float:
    """Odd frames predicted by linear interpolation of their neighbours; 1 - mean abs error / 255."""
    v = video.astype(np.float32)
    if len(v) < 3:
        return 1.0
    pred = 0.5 * (v[0:-2:2] + v[2::2])
    return float(1.0 - np.abs(pred - v[1:-1:2]).mean() / 255.0)


def background_consistency_score(video: np.ndarray, border: int = 2) -> float:
    v = video.astype(np.float32)
    m = np.zeros(v.shape[1:3], dtype=bool)
    m[:border], m[-border:], m[:, :border], m[:, -border:] = True, True, True, True
    b = v[:, m]
    return float(1.0 - np.abs(b[1:] - b[:1]).mean() / 255.0) if len(v) > 1 else 1.0


def subject_consistency_score(features: torch.Tensor) -> float:
    """VBench's form: mean over frames of (cos(f_t, f_0) + cos(f_t, f_{t-1})) / 2, on probe features."""
    f = torch.nn.functional.normalize(features, dim=1)
    if len(f) < 2:
        return 1.0
    s = ((f[1:] @ f[0]).clamp(0, 1) + (f[1:] * f[:-1]).sum(1).clamp(0, 1)) / 2
    return float(s.mean())


def relation_holds(video: np.ndarray, factors: dict) -> float:
    """Fraction of frames where object 0 (by colour) stands in the prompted relation to object 1."""
    o = factors["objects"]
    a, b = object_centroids(video, o[0]["colour"]), object_centroids(video, o[1]["colour"])
    dx, dy = RELATIONS[factors["relation"]]
    d = (a - b) @ np.array([dx, dy])
    ok = np.where(np.isnan(d), False, d > 0)
    return float(ok.mean())


def is_dynamic(video: np.ndarray, factors: dict, min_shift: float = 1.5) -> float:
    """1 if the prompted object's centroid moves at least `min_shift` pixels between the first and last frames in
    which it is seen (VBench's dynamic degree asks whether the video moves at all; here: the prompted object)."""
    c = object_centroids(video, factors["objects"][0]["colour"])
    good = ~np.isnan(c).any(1)
    if good.sum() < 2:
        return 0.0
    first, last = c[good][0], c[good][-1]
    return float(np.linalg.norm(last - first) >= min_shift)


def motion_ratios(videos: list[np.ndarray], prompts: list) -> list[float | None]:
    """Per video (None for static prompts): the prompted object's centroid displacement along the prompted
    direction between the first and last frames it is seen in, extrapolated to the whole clip, as a ratio of the
    ground-truth travel (speed x frames); 0 when the object is seen in fewer than two frames."""
    ratios: list[float | None] = []
    for v, p in zip(videos, prompts):
        f = Factors.from_dict(p.factors)
        if f.direction == "static":
            ratios.append(None)
            continue
        c = object_centroids(v, f.objects[0].colour)
        seen = np.where(~np.isnan(c).any(1))[0]
        truth = np.hypot(f.velocity[0] * v.shape[2], f.velocity[1] * v.shape[1]) * (len(v) - 1)
        if len(seen) < 2:
            ratios.append(0.0)
            continue
        shift = (c[seen[-1]] - c[seen[0]]) @ np.array(DIRECTIONS[f.direction]) * (len(v) - 1) / (seen[-1] - seen[0])
        ratios.append(float(shift / truth))
    return ratios


DIRECTION_THRESHOLD = 0.5  # a video moves the prompted way when it covers at least half the prompted travel


def direction_hits(ratios: np.ndarray) -> np.ndarray:
    """Per video: 1.0 where the prompted object covers at least DIRECTION_THRESHOLD of the prompted travel the
    prompted way (`motion_ratios`), 0.0 where not, NaN for static prompts (NaN ratios)."""
    r = np.asarray(ratios, dtype=float)
    return np.where(np.isnan(r), np.nan, (r >= DIRECTION_THRESHOLD).astype(float))


def travel_score(ratios: np.ndarray) -> np.ndarray:
    """Per video: how close the prompted object's travel comes to the prompted one, 1 - |ratio - 1| clipped to
    [0, 1] (`motion_ratios`): 1 for exactly the prompted travel the prompted way, 0 for none (or backwards) and for
    twice the prompted travel; an overshoot counts as much against a video as an undershoot of the same size.
    NaN for static prompts (NaN ratios)."""
    r = np.asarray(ratios, dtype=float)
    return np.clip(1.0 - np.abs(r - 1.0), 0.0, 1.0)


def motion_summary(ratios: list[float | None]) -> dict[str, float | int]:
    """`direction_accuracy`: the share of moving-prompt videos that move the prompted way (`direction_hits`);
    `travel_score`: the mean `travel_score` (bounded, highest at the prompted travel)."""
    r = np.array([x for x in ratios if x is not None], dtype=float)
    if not len(r):
        return {"videos": 0}
    return {"videos": len(r), "direction_accuracy": float(direction_hits(r).mean()),
            "travel_score": float(travel_score(r).mean())}


def prompted_motion(videos: list[np.ndarray], prompts: list) -> dict[str, float | int]:
    """Does the prompted object move the prompted way? (`motion_ratios`, `motion_summary`; VBench's dynamic
    degree only asks whether anything moves; the synthetic world knows where things should go.)"""
    return motion_summary(motion_ratios(videos, prompts))


def synthetic_dimensions(videos: list[np.ndarray], prompts: list, probe) -> dict[str, float]:
    """Mean of each dimension over the videos whose prompt serves it."""
    return dimension_means(synthetic_scores(videos, prompts, probe))


def dimension_means(per_video: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each dimension over the videos that have a score in it (`synthetic_scores`)."""
    per: dict[str, list[float]] = {}
    for scores in per_video:
        for d, x in scores.items():
            per.setdefault(d, []).append(x)
    return {d: float(np.mean(x)) for d, x in per.items()}


def synthetic_scores(videos: list[np.ndarray], prompts: list, probe) -> list[dict[str, float]]:
    """Each video's score in each dimension its prompt serves (the synthetic proxy of VBench's per-video
    scores)."""
    shapes, colours, _ = _vocab()
    out_scores: list[dict[str, float]] = []
    for v, p in zip(videos, prompts):
        mine: dict[str, float] = {}
        out_scores.append(mine)
        f = p.factors
        x = frames_to_tensor(v)
        out = probe_outputs(probe, x)
        o = f["objects"]
        # an object counts in a frame when the probe reads it and its palette colour forms an object there (the
        # known palette of the synthetic world), so noise that fires probe units without any object does not count
        seen = {ob["colour"]: torch.from_numpy(blob_present(colour_mask(v, ob["colour"]))) for ob in o}
        sh = out["shapes"] > 0
        co = (out["colours"] > 0) & torch.stack([seen.get(c, torch.zeros(len(x), dtype=torch.bool))
                                                 for c in colours], 1)
        for dim in p.dimensions:
            if dim == "object_class":
                # VBench counts a frame when its detector finds the class: the prompted shape, on the prompted object
                s = float((sh[:, shapes.index(o[0]["shape"])] & co[:, colours.index(o[0]["colour"])]).float().mean())
            elif dim == "color":
                s = float(co[:, colours.index(o[0]["colour"])].float().mean())
            elif dim == "multiple_objects":
                ok = torch.ones(len(x), dtype=torch.bool)
                for obj in o:
                    ok &= sh[:, shapes.index(obj["shape"])] & co[:, colours.index(obj["colour"])]
                s = float(ok.float().mean())
            elif dim == "spatial_relationship":
                s = relation_holds(v, f)
            elif dim == "dynamic_degree":
                s = is_dynamic(v, f)
            elif dim == "motion_smoothness":
                s = motion_smoothness_score(v)
            elif dim == "subject_consistency":
                # feature consistency counts only while the prompted subject is there (the probe sees its colour):
                # a video of noise has self-similar features but no subject
                present = float(co[:, colours.index(o[0]["colour"])].float().mean())
                s = present * subject_consistency_score(out["features"])
            elif dim == "background_consistency":
                s = background_consistency_score(v)
            elif dim == "temporal_flickering":
                s = flicker_score(v)
            else:
                continue
            mine[dim] = s
    return out_scores


def synthetic_intervals(per_video: list[dict[str, float]], ratios: list[float | None], clusters: list,
                        seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """Percentile-bootstrap intervals (eval/uncertainty.py) of the synthetic proxy's dimensions, its VBench-style
    aggregates and the prompted-motion numbers, resampling the videos prompt by prompt. A resample that lacks a
    dimension the full set has gives no aggregate (its composition would differ)."""
    full = set(dimension_means(per_video))

    def stat(idx: np.ndarray) -> dict[str, float | None]:
        dims = dimension_means([per_video[i] for i in idx])
        out: dict[str, float | None] = {f"dimensions/{d}": v for d, v in dims.items()}
        agg = vb.aggregate(dims) if set(dims) == full else {}
        out.update({f"aggregate/{k}": agg.get(k) for k in ("total", "quality", "semantic")})
        motion = motion_summary([ratios[i] for i in idx])
        out.update({f"prompted_motion/{k}": motion.get(k) for k in ("direction_accuracy", "travel_score")})
        return out

    nested: dict[str, dict[str, list[float]]] = {}
    for key, ci in uq.bootstrap(stat, clusters, method="percentile", seed=seed).items():
        group, name = key.split("/")
        nested.setdefault(group, {})[name] = ci
    return nested


def probe_features(probe, videos: list[np.ndarray] | torch.Tensor) -> np.ndarray:
    """Probe features (N_frames, FEATURES) of every frame of `videos` (uint8 arrays or [-1, 1] frame tensors)."""
    feats = [probe_outputs(probe, frames_to_tensor(v) if isinstance(v, np.ndarray) else v)["features"]
             for v in videos]
    return torch.cat(feats).double().numpy()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), by clean-fid's `frechet_distance`.

    clean-fid 0.1.35 passes `disp=False` to scipy.linalg.sqrtm, an argument SciPy 1.18 removed (seen on a GPU
    machine's newer SciPy); there the same steps run here: the matrix square root, retried with `eps` added to
    the diagonals when it is not finite, its real part when the imaginary part is negligible."""
    from cleanfid.fid import frechet_distance as clean_fid_frechet

    try:
        return float(clean_fid_frechet(mu1, sigma1, mu2, sigma2, eps))
    except TypeError as e:
        if "disp" not in str(e):
            raise
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):  # numerical error may leave a small imaginary part
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def real_probe_stats(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the probe features of the real held-out frames (results/<profile>/probe/real_stats.npz)."""
    path = cfg.layout.probe_real_stats()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: real-frame statistics missing; run `pyramid-repro train-probe`")
    real = np.load(path)
    return real["mu"], real["sigma"]


def frechet_to_stats(feats: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Fréchet distance of the features `feats` (N, D) to N(mu, sigma)."""
    own = np.cov(feats, rowvar=False) if len(feats) > 1 else np.zeros_like(sigma)
    return float(frechet_distance(feats.mean(0), own, mu, sigma))


def frechet_to_real(feats: np.ndarray, cfg: Config) -> float:
    return frechet_to_stats(feats, *real_probe_stats(cfg))


class FrechetToFixed:
    """Fréchet distance of feature sets to one fixed Gaussian N(mu, sigma), fast enough to bootstrap.

    tr((S1 S2)^(1/2)) equals the sum of the square roots of the eigenvalues of the symmetric PSD matrix
    A S1 A with A = S2^(1/2), so with the fixed side's square root computed once each distance costs one symmetric
    eigenvalue problem instead of a general matrix square root (`frechet_distance`, which this equals to rounding
    for positive-definite covariances; tests/test_uncertainty.py)."""

    def __init__(self, mu: np.ndarray, sigma: np.ndarray):
        w, v = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
        self.mu, self.trace = np.asarray(mu, dtype=np.float64), float(np.trace(sigma))
        self.root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    def __call__(self, feats: np.ndarray) -> float:
        feats = np.asarray(feats, dtype=np.float64)
        own = np.cov(feats, rowvar=False) if len(feats) > 1 else np.zeros((feats.shape[1],) * 2)
        lam = np.linalg.eigvalsh(self.root @ own @ self.root)
        diff = feats.mean(0) - self.mu
        return float(diff @ diff + np.trace(own) + self.trace - 2 * np.sqrt(np.clip(lam, 0, None)).sum())


def frechet_interval(per_video: list[np.ndarray], clusters: list, mu: np.ndarray, sigma: np.ndarray,
                     n_resamples: int = uq.N_RESAMPLES, seed: int = 0, plug_in: float | None = None
                     ) -> tuple[float, list[float]]:
    """Bias-corrected Fréchet distance of all frames of the videos to N(mu, sigma) and its basic-bootstrap interval
    over the videos (resampled prompt by prompt; the real statistics, from many more frames, held fixed), the
    resamples computed with `FrechetToFixed`. The plug-in distance (`frechet_to_stats`, clean-fid's) is biased
    upwards by about tr(Sigma)/n; the estimate returned is `uncertainty.bias_corrected` (2 x plug-in - median of
    the resamples), the centre of the basic interval, so it always lies inside it. A caller that has the plug-in
    value already (`frechet_to_stats` of all frames) passes it as `plug_in`."""
    to_real = FrechetToFixed(mu, sigma)

    def stat(idx: np.ndarray) -> dict[str, float]:
        return {"fid": to_real(np.concatenate([per_video[i] for i in idx]))}

    if plug_in is None:
        plug_in = frechet_to_stats(np.concatenate(per_video), mu, sigma)
    _, draws = uq.bootstrap_draws(stat, clusters, n_resamples, seed=seed)
    return uq.bias_corrected(plug_in, draws["fid"]), list(uq.interval_from(plug_in, draws["fid"], method="basic"))


def fid_probe_features(videos: torch.Tensor, cfg: Config) -> np.ndarray:
    """Probe features (N_frames, FEATURES), float64, of every frame of generated videos (N, 3, T, H, W) or frames
    (N, 3, H, W) in [-1, 1], video-major; a decoder's small overshoot is clipped as when the video is written to
    uint8."""
    if not isinstance(videos, torch.Tensor) or videos.ndim not in (4, 5) or videos.shape[1] != 3:
        shape = tuple(videos.shape) if hasattr(videos, "shape") else type(videos).__name__
        raise ValueError(f"fid_probe_score: expected a tensor (N, 3, T, H, W) or (N, 3, H, W) in [-1, 1], got {shape}")
    if videos.numel() and (videos.min() < -5 or videos.max() > 5):
        raise ValueError(f"fid_probe_score: values in [{float(videos.min()):.2f}, {float(videos.max()):.2f}]; "
                         "expected [-1, 1] (decoded videos, not uint8 or latents)")
    videos = videos.clamp(-1, 1).float()
    frames = videos if videos.ndim == 4 else videos.transpose(1, 2).reshape(-1, 3, *videos.shape[-2:])
    if len(frames) < 2:
        raise ValueError("fid_probe_score: at least 2 frames are needed for a covariance")
    return probe_features(load_probe(cfg, frames.device), [frames])


def fid_probe_score(videos: torch.Tensor, cfg: Config, clusters: list | None = None,
                    n_resamples: int = uq.N_RESAMPLES) -> float | tuple[float, list[float]]:
    """Probe FID (Fréchet distance of probe features, `frechet_distance`) of generated videos
    (N, 3, T, H, W) or frames (N, 3, H, W) in [-1, 1], every frame counted (`fid_probe_features`), against the
    cached statistics of the real held-out frames (results/<profile>/probe/real_stats.npz). The FID-vs-compute
    curves (paper Fig. 5-6 analogue; offline proxy, not Inception FID) score their points from the same features
    (eval/fid_points.py). With `clusters` (one label per video, e.g. its caption) also its basic-bootstrap
    interval over the videos: returns (fid, [lo, hi])."""
    feats = fid_probe_features(videos, cfg)
    mu, sigma = real_probe_stats(cfg)
    if clusters is None:
        return frechet_to_stats(feats, mu, sigma)
    if len(clusters) != len(videos):
        raise ValueError(f"fid_probe_score: {len(clusters)} cluster labels for {len(videos)} videos")
    per_video = np.split(feats, len(videos))  # frames are video-major (N, T) -> N blocks of T
    return frechet_interval(per_video, clusters, mu, sigma, n_resamples, seed=cfg.seed)


def inception_features(videos: list[np.ndarray], path: str | None, batch: int = 64,
                       device: torch.device | str = "cpu") -> np.ndarray:
    """2048-d pool features of every frame with clean-fid's Inception (TorchScript `inception-2015-12-05.pt`) from
    a local file (eval.inception_path), computed on `device`; frames resized to 299x299 (bicubic, antialiased).
    Never downloads."""
    if not path or not Path(path).is_file() or Path(path).name != "inception-2015-12-05.pt":
        raise ConfigError(f"eval.inception_path={path!r}: the clean-fid backend needs clean-fid's Inception weights "
                          "as a local file named inception-2015-12-05.pt; they are never downloaded")
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W(str(Path(path).parent), download=False, resize_inside=False).to(device)
    frames = np.concatenate(videos)
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[i: i + batch])).permute(0, 3, 1, 2).float().to(device)
            x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bicubic", antialias=True).clamp(0, 255)
            out.append(model(x).cpu())
    return torch.cat(out).double().numpy()


def fid_kid(fake: np.ndarray, real: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """FID and KID between two feature sets with clean-fid's own routines (`frechet_distance`, `kernel_distance`:
    the unbiased cubic-polynomial-kernel MMD of Binkowski et al. 2018 over 100 subsets); the subset draw is seeded
    so the same features give the same KID."""
    from cleanfid.fid import kernel_distance

    fid = frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))
    state = np.random.get_state()
    np.random.seed(seed)  # kernel_distance draws its subsets from numpy's global generator
    try:
        kid = kernel_distance(fake, real)
    finally:
        np.random.set_state(state)
    return float(fid), float(kid)


def inception_fid(videos: list[np.ndarray], cfg: Config, clusters: list) -> dict:
    """Inception FID and KID of generated frames against the frames of the held-out (test split) real clips: the
    bias-corrected FID with its basic-bootstrap interval over the generated videos (`clusters`: their prompt ids;
    `frechet_interval`), the plug-in FID (clean-fid's number), KID and every frame's features."""
    dev = config_device(cfg)
    fake = inception_features(videos, cfg.eval.inception_path, device=dev)
    per_video = np.split(fake, np.cumsum([len(v) for v in videos])[:-1])
    stats = cfg.layout.inception_real_features()
    if not stats.is_file():
        ds = ClipDataset.from_config(cfg, "test", "video")
        real = [((ds[i]["video"].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy() for i in range(len(ds))]
        stats.parent.mkdir(parents=True, exist_ok=True)
        np.save(stats, inception_features(real, cfg.eval.inception_path, device=dev))
    real = np.load(stats)
    plug_in, kid = fid_kid(fake, real, cfg.seed)  # the same Fréchet distance frechet_interval would recompute
    fid, ci = frechet_interval(per_video, clusters, real.mean(0), np.cov(real, rowvar=False), seed=cfg.seed,
                               plug_in=plug_in)
    return {"fid": fid, "fid_plug_in": plug_in, "kid": kid, "interval": ci, "per_video": per_video}


def synthetic_units(per_video: list[dict[str, float]], ratios: list[float | None], blocks: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """The synthetic proxy's per-video data, one entry per video (NaN where a video's prompt does not serve a
    dimension): every dimension's score (`dim/<name>`), the prompted-motion ratio (`motion_ratio`, NaN for static
    prompts) and `jump_blockiness`. Saved beside the metrics so comparisons can be recomputed and paired
    (report/claims.py)."""
    names = sorted({d for scores in per_video for d in scores})
    out = {f"dim/{d}": np.array([scores.get(d, np.nan) for scores in per_video], dtype=float) for d in names}
    out["motion_ratio"] = np.array([np.nan if r is None else r for r in ratios], dtype=float)
    out["jump_blockiness"] = np.asarray(blocks, dtype=float)
    return out


def feature_units(per_video: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every frame's features (float32) and the index of its video: an FID backend's per-video data."""
    return {"features": np.concatenate(per_video).astype(np.float32),
            "frame_video": np.concatenate([np.full(len(f), i) for i, f in enumerate(per_video)])}


def _score_synthetic(videos: list[np.ndarray], prompts: list, cfg: Config, video_dir: Path) -> dict:
    """The `synthetic` backend: VBench-analogue dimensions against the synthetic world's known factors."""
    if any(p.factors is None for p in prompts):
        raise ConfigError("the synthetic backend needs prompts with ground-truth factors (eval.suite: synthetic)")
    per_video = synthetic_scores(videos, prompts, load_probe(cfg))
    ratios = motion_ratios(videos, prompts)
    dims = dimension_means(per_video)
    agg = vb.aggregate(dims)
    intervals = synthetic_intervals(per_video, ratios, [p.id for p in prompts], cfg.seed)
    lp = latent_pixel_size(cfg)
    blocks = np.array([jump_blockiness(v, lp) for v in videos])
    return {"dimensions": dims, "aggregate": {k: agg[k] for k in ("total", "quality", "semantic")},
            "fid": None, "extra": {"missing_vbench_dimensions": agg["missing"],
                                   "prompted_motion": motion_summary(ratios),
                                   "jump_blockiness": {"mean": float(blocks.mean()), "latent_pixel": lp}},
            "intervals": intervals,
            "interval": uq.metadata("percentile", "videos", len(videos), len({p.id for p in prompts})),
            "units": synthetic_units(per_video, ratios, blocks)}


def _score_fid_probe(videos: list[np.ndarray], prompts: list, cfg: Config, video_dir: Path) -> dict:
    """The `fid-probe` backend: Fréchet distance of probe features, generated vs real held-out frames."""
    probe = load_probe(cfg)
    per_video = [probe_features(probe, [v]) for v in videos]
    real = real_probe_stats(cfg)
    plug_in = frechet_to_stats(np.concatenate(per_video), *real)
    fid, ci = frechet_interval(per_video, [p.id for p in prompts], *real, seed=cfg.seed, plug_in=plug_in)
    return {"dimensions": {}, "aggregate": {}, "fid": fid,
            "extra": {"frames": int(sum(len(v) for v in videos)), "fid_plug_in": plug_in},
            "intervals": {"fid": ci},
            "interval": uq.metadata("basic", "videos", len(videos), len({p.id for p in prompts})),
            "units": feature_units(per_video)}


def _score_clean_fid(videos: list[np.ndarray], prompts: list, cfg: Config, video_dir: Path) -> dict:
    """The `clean-fid` backend: FID and KID with clean-fid's Inception from a local file."""
    r = inception_fid(videos, cfg, [p.id for p in prompts])
    return {"dimensions": {}, "aggregate": {}, "fid": r["fid"],
            "extra": {"kid": r["kid"], "fid_plug_in": r["fid_plug_in"]}, "intervals": {"fid": r["interval"]},
            "interval": uq.metadata("basic", "videos", len(videos), len({p.id for p in prompts})),
            "units": feature_units(r["per_video"])}


def _score_vbench(videos: list[np.ndarray], prompts: list, cfg: Config, video_dir: Path) -> dict:
    """The `vbench` backend: the official VBench on the sampled video files, in its own environment."""
    dims = vb.run_vbench(cfg, Path(video_dir), Path(video_dir) / "vbench_out",
                         replication_dir() / "prompts" / "vbench" / "VBench_full_info.json")
    agg = vb.aggregate(dims)
    return {"dimensions": dims, "aggregate": {k: agg[k] for k in ("total", "quality", "semantic")}, "fid": None,
            "extra": {"missing_vbench_dimensions": agg["missing"]},
            "protocol": vb.vbench_protocol(cfg, Path(video_dir))}  # version, mode, prompts, fps, frames, size


def _score_evalcrafter(videos: list[np.ndarray], prompts: list, cfg: Config, video_dir: Path) -> dict:
    """The `evalcrafter` backend: EvalCrafter's raw metrics from a local installation."""
    return score_evalcrafter(cfg, Path(video_dir))


# the score function of every backend of the registry (pyramid_repro/backend_specs.py), keyed by the same names
SCORERS = {
    "synthetic": _score_synthetic,
    "fid-probe": _score_fid_probe,
    "clean-fid": _score_clean_fid,
    "vbench": _score_vbench,
    "evalcrafter": _score_evalcrafter,
}


def score(backend: str, videos: list[np.ndarray], prompts: list, cfg: Config, video_dir: Path) -> dict:
    """Metrics of one backend: {"dimensions", "aggregate", "fid", "extra"} (without provenance)."""
    if backend not in SCORERS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {sorted(SCORERS)}")
    return SCORERS[backend](videos, prompts, cfg, video_dir)
