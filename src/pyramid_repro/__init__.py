"""pyramid_repro: reproducible replication suite for Pyramid Flow (Jin et al., ICLR 2025)."""

__version__ = "0.1.0"
