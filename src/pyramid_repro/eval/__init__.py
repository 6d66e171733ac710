"""Evaluation: prompt suites (prompts), sampling (sample; the generation itself is generation/), the probe network
(probe), scoring backends (backends; vbench, evalcrafter, clean-fid, fid-probe, synthetic) with VBench's own
aggregation (vbench) and the `score` command."""
