"""Training: the loop both trainers share (loop: accelerator, device, data parallel, EMA, lr schedule, resume, the
step loop), atomic checkpoints (checkpoint), the GPU-hour ledger (ledger), training sequences (sequences), the DiT
curriculum trainer (dit) and the VAE trainer (vae). Their commands are commands/train_dit.py and train_vae.py."""
