"""The paper's tables as data (replication/paper/*.csv, each row with its source)."""

from __future__ import annotations

import pandas as pd

from pyramid_repro.config import replication_dir

TABLES = ("table1", "table4", "table5", "table6", "speed")


def load_paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables: table1, table4, table5, table6, speed."""
    if name not in TABLES:
        raise KeyError(f"unknown paper table {name!r}; expected one of {list(TABLES)}")
    return pd.read_csv(replication_dir() / "paper" / f"{name}.csv")


def paper_a100_hours() -> dict:
    """Table 4's arithmetic: 128 A100 x (12 + 90 + 60) h = 20,736 A100-hours (VAE excluded)."""
    t4 = load_paper_table("table4")
    per_stage = (t4["gpus"] * t4["hours"]).tolist()
    return {"per_stage": per_stage, "total": float(sum(per_stage)), "claim": 20700.0,
            "vae_a100_hours_estimate": 3 * 24 * 32.0, "open_sora_1_2_claim": 40000.0}
