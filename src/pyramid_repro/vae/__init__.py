"""Causal 3D video VAE (docs/method.md §4): model, losses, training, evaluation and the normalised latent cache.

Public API: CausalVideoVAE, build_vae (vae/model.py); the VAE handle (vae/handle.py): load_vae(dir),
encode_video(vae, video), decode_latents(vae, latents), Normalization, and the authors' released VAE as a handle,
load_official_vae(dir) with OFFICIAL_NORMALIZATION (load_vae dispatches to it); the release's network
(vae/official.py): OfficialCausalVAE, is_official_vae_folder(dir); the latent cache (vae/cache.py):
LatentDataset(cache_dir, stage_name, split).
"""

from pyramid_repro.vae.cache import LatentDataset
from pyramid_repro.vae.handle import (
    OFFICIAL_NORMALIZATION,
    Normalization,
    decode_latents,
    encode_video,
    load_official_vae,
    load_vae,
)
from pyramid_repro.vae.model import CausalVideoVAE, build_vae
from pyramid_repro.vae.official import OfficialCausalVAE, is_official_vae_folder

__all__ = ["CausalVideoVAE", "build_vae", "load_vae", "decode_latents", "encode_video", "LatentDataset",
           "Normalization", "OfficialCausalVAE", "load_official_vae", "is_official_vae_folder",
           "OFFICIAL_NORMALIZATION"]
