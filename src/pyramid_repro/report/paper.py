"""The paper's tables as data (replication/paper/*.csv, each row with its `source`; see its README.md).

Jin et al., arXiv 2410.05954v2: Table 1 (VBench), Table 4 (training stages and hours), Table 5 (16 VBench
dimensions), Table 6 (EvalCrafter) and the generation speed stated in the text.
"""

from __future__ import annotations

import pandas as pd

from pyramid_repro.config import replication_dir

# table name -> the columns its CSV must have
COLUMNS: dict[str, tuple[str, ...]] = {
    "table1": ("model", "total", "quality", "semantic", "motion_smoothness", "dynamic_degree", "public_data"),
    "table4": ("stage", "data", "steps", "batch", "hours", "gpus", "a100_hours"),
    "table5": ("dimension", "score"),
    "table6": ("metric", "score"),
    "speed": ("setting", "seconds_per_video", "hardware"),
}
TABLES = tuple(COLUMNS)


def load_paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables (table1, table4, table5, table6, speed) as a DataFrame with a `source` column.

    Raises KeyError for an unknown name and ValueError when the CSV lacks an expected column."""
    if name not in COLUMNS:
        raise KeyError(f"unknown paper table {name!r}; expected one of {list(TABLES)}")
    path = replication_dir() / "paper" / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the paper's {name} is missing (replication/paper/README.md lists them)")
    df = pd.read_csv(path)
    missing = [c for c in (*COLUMNS[name], "source") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {[*COLUMNS[name], 'source']}")
    return df


def paper_a100_hours() -> dict:
    """Table 4's arithmetic: 128 A100 x (12 + 90 + 60) h = 20,736 A100-hours (VAE excluded), beside the claims
    of the text: "20.7k", the VAE's about 3 days on 32 A100s and Open-Sora 1.2's >40k GPU-hours."""
    t4 = load_paper_table("table4")
    per_stage = (t4["gpus"] * t4["hours"]).tolist()
    return {"per_stage": per_stage, "total": float(sum(per_stage)), "claim": 20700.0,
            "vae_a100_hours_estimate": 3 * 24 * 32.0, "open_sora_1_2_claim": 40000.0}
