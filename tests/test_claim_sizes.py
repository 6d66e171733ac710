"""Size-aware verdicts, censored speed-ups and the one speed-up definition of the claims and FID reports
(report/claims.py, report/render.py; docs/method.md §11)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fid_helpers import write_fid_run

from pyramid_repro.config import load_config
from pyramid_repro.eval import uncertainty as uq
from pyramid_repro.flow.cost import PAPER_CLAIM_PERCENT
from pyramid_repro.report import claims as cl
from pyramid_repro.report import render


def test_size_verdict_reads_consistent_inside_the_interval_and_excluded_outside():
    assert cl.size_verdict((1.48, 2.55), 3.0) == cl.SIZE_EXCLUDED
    assert cl.size_verdict((2.1, 3.4), 3.0) == cl.SIZE_CONSISTENT
    assert cl.size_verdict((3.2, math.inf), 3.0) == cl.SIZE_EXCLUDED  # wholly above the stated size
    assert cl.size_verdict((1.2, math.inf), 3.0) == cl.SIZE_CONSISTENT  # open upper end: 3 is still inside
    # "more than 85%": the interval must lie above it
    assert cl.size_verdict((91.0, 91.0), 85.0, "above") == cl.SIZE_CONSISTENT
    assert cl.size_verdict((80.0, 80.0), 85.0, "above") == cl.SIZE_EXCLUDED
    assert cl.size_verdict((80.0, 90.0), 85.0, "above") == cl.UNDECIDED
    assert cl.size_verdict((math.nan, 2.0), 3.0) == cl.UNDECIDED
    with pytest.raises(ValueError, match="size test"):
        cl.size_verdict((1.0, 2.0), 3.0, "roughly")
    assert cl.verdict_text(cl.SUPPORTED, "3x excluded (1.78x [1.48, 2.55])") == \
        "supported in direction; 3x excluded (1.78x [1.48, 2.55])"
    assert cl.verdict_text(cl.UNDECIDED, None) == cl.UNDECIDED


def test_claims_with_a_stated_size_name_how_it_is_tested():
    claims = {c.id: c for c in cl.load_claims()}
    sized = [c for c in claims.values() if c.paper is not None]
    assert sized and all(c.size_test in cl.SIZE_TESTS for c in sized)
    tokens = [c for c in sized if c.kind == "tokens"]
    assert tokens and all(c.paper == PAPER_CLAIM_PERCENT and c.size_test == "above" for c in tokens)


def test_resampled_spread_gives_no_standard_error_when_censored_beyond_the_interval_tail():
    boot = np.r_[np.full(998, np.inf), 0.2, 0.3]
    se, share = uq.resampled_spread(boot)
    assert math.isnan(se) and share == pytest.approx(0.998)
    assert math.isnan(uq.units_for_power(0.3, se, 64))
    few = np.r_[np.full(20, np.inf), np.linspace(0, 1, 980)]  # 2% censored: the 95% interval is still finite
    se, share = uq.resampled_spread(few)
    assert np.isfinite(se) and share == pytest.approx(0.02)
    assert uq.resampled_spread(np.linspace(0, 1, 50))[1] == 0.0


@pytest.fixture(scope="module")
def fid_run(tmp_path_factory):
    """A run whose pyramid reaches every FID at half the baseline's FLOPs (speed-up 2, well away from the paper's
    3) with twice the baseline's samples per FLOP (speed-up 1 per sample seen), its claims table and FID report."""
    tmp = tmp_path_factory.mktemp("fid_run")
    cfg = load_config("smoke", {"results": str(tmp / "results"), "reports": str(tmp / "reports"),
                                "experiments": ["pyramid", "fullseq"]})
    progress = np.arange(1, 7, dtype=float)
    write_fid_run(cfg, {"pyramid": list(1.6 / progress), "fullseq": list(1.6 / (progress / 2))},
                  {"pyramid": 4.0, "fullseq": 2.0})
    curves = render.load_fid_curves(cfg)
    df = cl.claims_frame(cfg, curves)
    out = tmp / "reports"
    out.mkdir(exist_ok=True)
    render.render_fid(cfg, out, curves, df)
    return cfg, df[df.claim_id == "spatial_pyramid"], out


def _row(rows: pd.DataFrame, start: str, axis: str | None = None) -> pd.Series:
    pick = rows[rows.statistic.str.startswith(start)]
    pick = pick[pick.statistic.str.endswith(f"x = {axis}")] if axis else pick[~pick.statistic.str.contains("x = ")]
    assert len(pick) == 1, rows.statistic.tolist()
    return pick.iloc[0]


def test_a_speedup_whose_interval_excludes_the_stated_size_reads_excluded(fid_run):
    _, rows, _ = fid_run
    common = _row(rows, "speedup_common")
    assert common.verdict == cl.SUPPORTED and common.hi < math.log(3.0), common.display
    assert common.size_verdict.startswith("3x excluded (") and f"{math.exp(common.estimate):.3g}x [" in \
        common.size_verdict
    # the samples-seen speed-up of the same curves sits beside it, with its own interval and no verdict
    step = _row(rows, "speedup_common", "samples_seen")
    assert step.verdict == cl.NO_VERDICT and pd.isna(step.p_value) and pd.isna(step.size_verdict)
    assert math.exp(step.estimate) == pytest.approx(math.exp(common.estimate) / 2, rel=1e-6)
    assert step.lo <= step.estimate <= step.hi
    assert "per samples seen: " in common.display


def test_a_censored_speedup_gives_no_power_number_and_lies_inside_its_interval(fid_run):
    _, rows, _ = fid_run
    best = _row(rows, "speedup_pyramid_best")  # the baseline never reaches the pyramid's best FID
    assert best.display.startswith(">= ") and "censored" in best.display
    assert best.lo <= best.estimate <= best.hi and best.hi == math.inf
    assert pd.isna(best.se) and pd.isna(best.needed_for_power)
    assert "every resample censored (all 1000)" in best.note or " of 1000 resamples censored (" in best.note
    assert cl.censored_phrase(0.998, 1000) == "998 of 1000 resamples censored (99.8%)"
    assert cl.censored_phrase(1.0, 1000).startswith("every resample censored")


def test_fid_convergence_states_the_claims_speedup_at_the_same_target(fid_run):
    cfg, rows, out = fid_run
    table = pd.read_csv(out / "fid_convergence.csv")
    for axis, row in (("flops", _row(rows, "speedup_common")),
                      ("samples_seen", _row(rows, "speedup_common", "samples_seen"))):
        t = table[(table.axis == axis) & (table.target_kind == "common")].iloc[0]
        assert t.speedup == pytest.approx(math.exp(row.estimate), rel=1e-9)
        assert f"target probe-feature FID {t.target:.4g} " in row.note
    text = (out / "fid_convergence.txt").read_text()
    assert f"{math.exp(_row(rows, 'speedup_common').estimate):.2f}x" in text and "3x excluded" in text
    assert "paper: about 3x" in text
