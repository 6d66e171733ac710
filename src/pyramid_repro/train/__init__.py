"""Training: accelerate setup (runtime), atomic checkpoints and resume (checkpoint), the GPU-hour ledger (ledger),
training sequences (sequences) and the DiT curriculum trainer (dit)."""
