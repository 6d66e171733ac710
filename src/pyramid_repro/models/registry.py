"""The velocity-model classes a checkpoint folder may hold, and `load_dit`, which loads any of them.

A folder written by save_pretrained names its class in config.json's `_class_name`; `DIT_CLASSES` maps that name
to the class. A new model (e.g. the authors' miniFLUX) is a `base.DiTModel` subclass in its own file, added here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pyramid_repro.models.attention import DEFAULT_KERNEL, set_kernel
from pyramid_repro.models.base import DiTModel
from pyramid_repro.models.dit import PyramidDiT
from pyramid_repro.models.miniflux import MiniFluxDiT
from pyramid_repro.models.official import OfficialPyramidDiT

DIT_CLASSES: dict[str, type[DiTModel]] = {cls.__name__: cls for cls in (PyramidDiT, OfficialPyramidDiT, MiniFluxDiT)}


def dit_class(config: dict) -> type[DiTModel]:
    """The class of a checkpoint's config.json. Folders written before the authors' model had its own class name
    `PyramidDiT` with `variant: official`."""
    name = config.get("_class_name", PyramidDiT.__name__)
    if name == PyramidDiT.__name__ and config.get("variant") == "official":
        name = OfficialPyramidDiT.__name__
    if name not in DIT_CLASSES:
        raise ValueError(f"config.json names the model class {name!r}; this suite loads "
                         f"{', '.join(DIT_CLASSES)}")
    return DIT_CLASSES[name]


def load_dit(folder, device: torch.device | str = "cpu", kernel: str = DEFAULT_KERNEL) -> DiTModel:
    """A trained DiT from a folder written by save_pretrained (config.json + weights), in eval mode on `device`,
    with the attention kernel `kernel` (a config's model.attention_kernel; not saved in the folder)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder}: not a DiT checkpoint folder (no config.json); train the experiment "
                                "first (snakemake ... train_dit) or pass --checkpoint <folder with config.json>")
    cls = dit_class(json.loads((folder / "config.json").read_text()))
    return set_kernel(cls.from_pretrained(folder).eval().to(device), kernel)
