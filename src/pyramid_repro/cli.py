"""`pyramid-repro <command>`: the suite's command line. Snakemake rules call these commands.

Each command lives in its own module and exposes ``main(argv) -> int``; they are imported lazily so
`pyramid-repro --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

from pyramid_repro.config import ConfigError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("pyramid_repro.commands.config_cmd", "print the resolved config (and its hash) of a profile/experiment"),
    "schema": ("pyramid_repro.commands.config_cmd", "print the JSON schema generated from the typed config"),
    "make-dataset": ("pyramid_repro.commands.make_dataset", "render the synthetic world (or check a real manifest)"),
    "train-vae": ("pyramid_repro.commands.train_vae", "train the causal 3D VAE (resumable)"),
    "eval-vae": ("pyramid_repro.commands.eval_vae", "PSNR/SSIM of the VAE on held-out clips + reconstruction grid"),
    "encode-latents": ("pyramid_repro.commands.encode_latents",
                       "encode the dataset once into the normalised latent cache"),
    "train-dit": ("pyramid_repro.commands.train_dit", "train one DiT curriculum stage of one experiment (resumable)"),
    "fid-points": ("pyramid_repro.commands.fid_points", "sample and score a DiT stage's FID snapshots -> its fid.csv"),
    "sample": ("pyramid_repro.commands.sample", "sample a prompt suite from a checkpoint into videos"),
    "score": ("pyramid_repro.commands.score", "score sampled videos with a backend -> metrics/<backend>.json"),
    "train-probe": ("pyramid_repro.commands.train_probe", "train the offline probe network on real synthetic frames"),
    "report": ("pyramid_repro.commands.report", "render reports/ tables and plots"),
    "audit": ("pyramid_repro.commands.audit", "GPU-hour audit: the paper's Table 4 arithmetic and this run's ledger"),
    "compare": ("pyramid_repro.commands.compare", "sample, score and compare a new checkpoint with the paper"),
    "export": ("pyramid_repro.commands.export",
               "write a checkpoint fine-tuned from an authors' release back in the release's layout"),
    "study": ("pyramid_repro.commands.study", "the paper's user study: create pairs and rater links, serve, report"),
    "tokens": ("pyramid_repro.commands.tokens", "token arithmetic of the pyramid vs full sequence"),
    "plan": ("pyramid_repro.commands.plan", "memory per GPU of every training job of a profile, before launch"),
    "launch": ("pyramid_repro.commands.launch",
               "run a training command with data-parallel processes (one or several nodes)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: pyramid-repro <command> [options]   (pyramid-repro <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


# bad input data (a manifest row or video file that cannot give a sample): printed as one line, like a ConfigError
_DATA_ERRORS = (("pyramid_repro.data.datasets", "BadVideoError"), ("pyramid_repro.data.video_io", "VideoReadError"))


def _is_bad_data(e: BaseException) -> bool:
    # only an imported module can have raised its error type, so this imports nothing (keeps --help fast)
    types = [getattr(sys.modules.get(mod), name, None) for mod, name in _DATA_ERRORS]
    return any(t is not None and isinstance(e, t) for t in types)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"pyramid-repro: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    entry = getattr(module, "main_" + name.replace("-", "_"), None) or module.main
    try:
        return int(entry(rest) or 0)
    except ConfigError as e:
        print(f"pyramid-repro {name}: configuration error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not _is_bad_data(e):
            raise
        print(f"pyramid-repro {name}: bad input data: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
