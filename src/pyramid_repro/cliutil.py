"""Shared argparse pieces: every command takes the same --profile / --experiment / --set options."""

from __future__ import annotations

import argparse
import json
import os

from pyramid_repro.base import OVERRIDES_ENV
from pyramid_repro.config import PROFILES, Config, ConfigError, deep_merge, load_config, parse_override
from pyramid_repro.layout import split_run_name
from pyramid_repro.releases import apply_release


def add_config_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("configuration")
    g.add_argument("--profile", help=f"{' | '.join(PROFILES)} (default: replication/config.yaml)")
    g.add_argument("--experiment", help="an experiment of replication/experiments.yaml (e.g. pyramid, fullseq), or "
                   "one of its training runs, e.g. pyramid/seed_1 (train.seeds; the same as --set train.run=1)")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set vae.train.steps=100 (repeatable)",
    )


def config_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The parser of `pyramid-repro <command>`, with the shared configuration options already added."""
    ap = argparse.ArgumentParser(prog=f"pyramid-repro {command}", description=description)
    add_config_args(ap)
    return ap


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")


def config_from_args(args: argparse.Namespace, require_experiment: bool = False) -> Config:
    """The resolved config of the command line, with the latent geometry of the release it fine-tunes when
    `release` is set (releases.apply_release); also applies --threads when the command has it."""
    if require_experiment and not getattr(args, "experiment", None):
        raise SystemExit(f"{getattr(args, 'prog', 'pyramid-repro')}: error: --experiment is required")
    if getattr(args, "threads", 0):
        import torch

        torch.set_num_threads(args.threads)
    over: dict = {}
    env = os.environ.get(OVERRIDES_ENV)
    if env:
        try:
            over = json.loads(env)
        except json.JSONDecodeError as e:
            raise ConfigError(f"environment variable {OVERRIDES_ENV}: not valid JSON ({e})") from None
    if getattr(args, "experiment", None):
        # a run name (layout.run_name): the experiment, and the training run as train.run
        try:
            args.experiment, run = split_run_name(args.experiment)
        except ValueError as e:
            raise ConfigError(f"--experiment: {e}") from None
        if run:
            over = deep_merge(over, {"train": {"run": run}})
    for item in args.overrides or []:
        over = deep_merge(over, parse_override(item))
    return apply_release(load_config(args.profile, over, getattr(args, "experiment", None)))
