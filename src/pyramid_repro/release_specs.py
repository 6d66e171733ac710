"""What the workflow needs to know about fine-tuning one of the authors' releases, without loading one (the facts
the Snakefile's planning may ask: it imports no torch).

The records themselves (model classes, converters, text encoders, VAE normalisation, latent geometry) are
releases.py's `ReleaseKind`s; this module holds the two facts the rule graph reads: where a release folder keeps its
causal VAE (the input of every rule that encodes or decodes latents when `release` is set), and the method every
release was trained with, which decides the experiments a fine-tune can run (docs/release.md §12).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyramid_repro.base import ConfigError

VAE_FOLDER = "causal_video_vae"  # the release's causal VAE (config.json + weights)

# The method both releases (SD3 and miniFLUX) were pretrained with, as config keys of this suite: blockwise causal
# attention across frames, three spatial pyramid stages, the compressed history of the temporal pyramid. An
# experiment whose resolved config changes one of these (fullseq, bidirectional, no_temporal_pyramid) would have to
# learn another computation from the release's weights: that is pretraining, not fine-tuning.
RELEASE_METHOD: dict[str, Any] = {"model.attention": "causal", "pyramid.stages": 3, "pyramid.temporal_pyramid": True}


def release_vae_config(folder: str | Path) -> Path:
    """<release>/causal_video_vae/config.json, the file a fine-tuning run's encoding and decoding rules depend on; a
    ConfigError naming `release` and the folder when it is not there."""
    path = Path(folder) / VAE_FOLDER / "config.json"
    if not path.is_file():
        raise ConfigError(f"release={str(folder)!r}: not a Pyramid Flow release folder ({path} not found; expected "
                          "the authors' layout, see docs/release.md)")
    return path


def _dotted(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def method_conflicts(tree: dict) -> list[str]:
    """The keys of RELEASE_METHOD a resolved config (as a dict, `Config.to_dict()`) sets otherwise, each as
    'key=value (the releases: value)'; [] when a release can be fine-tuned with it."""
    return [f"{k}={_dotted(tree, k)!r} (the releases: {v!r})" for k, v in RELEASE_METHOD.items()
            if _dotted(tree, k) != v]
