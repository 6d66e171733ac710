"""benchmarks/gpu_check.py is the one-command GPU check; CI has no GPU, so its code runs here on the CPU with a
small model (its figures only mean something on a GPU)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_model_part_runs_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--only", "model", "--device", "cpu", "--model",
                        "smoke", "--steps", "1", "--frames", "2", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert [x["check"] for x in lines] == ["environment", "train_step", "train_step", "generate", "generate",
                                           "generate", "generate_ratios"]
    assert all(x["seconds_per_step"] > 0 and x["mean_tokens"] > 0 for x in lines if x["check"] == "train_step")
    ratios = lines[-1]
    assert ratios["kv_vs_uncached_max_abs_diff"] < 1e-4  # fp32 on the CPU: the history KV cache is exact
    assert r.stdout.count("\n") == len(lines)  # one JSON line per figure on stdout


def test_gpu_check_memory_part_runs_on_cpu(tmp_path):
    """The memory part (measured peak of each paper stage's planned setting beside the memory plan's figure) on the
    CPU with a small model: no peak to read there, but the plan's figure, the steps with activation checkpointing,
    and the model states the steps actually held, which the plan's states bound (parameters that get no gradient,
    the last block's text output, have no gradient or AdamW state)."""
    r = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--only", "memory", "--device", "cpu", "--model",
                        "smoke", "--steps", "1", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    memory = [x for x in lines if x["check"] == "memory"]
    assert [x["stage"] for x in memory] == ["image", "video_highres"]
    for x in memory:
        assert "error" not in x, x
        assert x["plan_gb"] > 0 and x["measured_gb"] is None and x["ratio"] is None  # no allocator stats on a CPU
        assert x["checkpointing"] == 1.0 and x["micro_batch"] == x["planned_micro_batch"] > 0
        assert 0.9 * x["plan_states_gb"] <= x["measured_states_gb"] <= x["plan_states_gb"]
