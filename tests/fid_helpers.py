"""A run's FID points written as the fid-points job leaves them (fid_curve.csv with each point's features in its
`units_file`, the probe's real statistics), for the tests of the speed-up that the claims and FID reports share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pyramid_repro.config import Config

D, CAPTIONS = 4, 48


def write_fid_run(cfg: Config, shifts: dict[str, list[float]], samples_per_flop: dict[str, float],
                  stage: str | list[str] = "image", seed: int = 0) -> None:
    """One FID curve per experiment in `shifts`: point i's features are the captions' shared effect plus the
    experiment's mean shift shifts[name][i] plus its own noise, scored against N(0, 1.25 I), so the plug-in FID
    falls as the shift does. x: FLOPs 1e9 * (i + 1) for every experiment, samples seen that times
    samples_per_flop[name] (a cheaper sample: more samples for the same compute). `stage`: every point's curriculum
    stage, or one for all."""
    rng = np.random.default_rng(seed)
    caption = rng.normal(0, 1.0, (CAPTIONS, D))
    units = np.array([f"caption {i}" for i in range(CAPTIONS)])
    real = cfg.layout.probe_real_stats()
    real.parent.mkdir(parents=True, exist_ok=True)
    np.savez(real, mu=np.zeros(D), sigma=np.eye(D) * 1.25, n=10_000)
    for name, means in shifts.items():
        folder = cfg.layout.fid_curve(name).parent
        (folder / "fid_points").mkdir(parents=True, exist_ok=True)
        rows = []
        for i, m in enumerate(means):
            feats = m + caption + rng.normal(0, 0.5, (CAPTIONS, D))
            f = f"fid_points/step_{i + 1}.npz"
            np.savez(folder / f, features=feats, units=units)
            flops = 1e9 * (i + 1)
            # the curve's own `fid` column stands for the bias-corrected FID: deliberately not the plug-in value
            rows.append({"step": i + 1, "samples_seen": flops * samples_per_flop[name] / 1e9, "tokens_seen": i + 1,
                         "flops": flops, "device_hours": (i + 1) / 3600, "fid": D * m * m - 0.3,
                         "fid_lo": D * m * m - 0.6, "fid_hi": D * m * m, "backend": "fid-probe",
                         "stage": stage if isinstance(stage, str) else stage[i],
                         "units_file": f})
        pd.DataFrame(rows).to_csv(cfg.layout.fid_curve(name), index=False)
