"""Training: the scaffold both trainers share (loop: accelerator, device, data parallel, EMA, resume), atomic
checkpoints (checkpoint), the GPU-hour ledger (ledger), training sequences (sequences) and the DiT curriculum trainer
(dit); the VAE's trainer is vae/train.py."""
