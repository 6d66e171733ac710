"""Causal 3D video VAE (docs/method.md §4): model, losses, training, evaluation and the normalised latent cache.

Public API: CausalVideoVAE, build_vae, load_vae(dir), encode_video(vae, video, norm), decode_latents(vae, latents),
LatentDataset(cache_dir, stage_name, split); the authors' released VAE (vae/official.py): OfficialCausalVAE,
load_official_vae(dir), is_official_vae_folder(dir), OFFICIAL_NORMALIZATION (load_vae dispatches to it).
"""

from pyramid_repro.vae.model import CausalVideoVAE, build_vae

__all__ = ["CausalVideoVAE", "build_vae", "load_vae", "decode_latents", "encode_video", "LatentDataset",
           "Normalization", "OfficialCausalVAE", "load_official_vae", "is_official_vae_folder",
           "OFFICIAL_NORMALIZATION"]
_OFFICIAL = ("OfficialCausalVAE", "load_official_vae", "is_official_vae_folder", "OFFICIAL_NORMALIZATION")


def __getattr__(name):  # lazy: the cache/normalisation helpers pull in data/ and safetensors
    if name in ("load_vae", "decode_latents", "encode_video", "LatentDataset", "Normalization"):
        from pyramid_repro.vae import cache

        return getattr(cache, name)
    if name in _OFFICIAL:
        from pyramid_repro.vae import official

        return getattr(official, name)
    raise AttributeError(name)
