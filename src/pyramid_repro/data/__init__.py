"""Data: the synthetic video world, real-clip manifests, video IO and datasets."""
