"""What every rendered report shares: the matplotlib backend and the provenance footer."""

from __future__ import annotations

from pyramid_repro.config import Config
from pyramid_repro.provenance import git_commit, utc_now


def _plt():
    """matplotlib.pyplot on the non-interactive Agg backend (reports are written to files, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def footer(cfg: Config) -> str:
    """Profile, config hash, commit and date: the line under every report."""
    return (f"profile {cfg.profile} | config {cfg.config_hash()} | commit {git_commit()[:10]} | "
            f"rendered {utc_now()}")
