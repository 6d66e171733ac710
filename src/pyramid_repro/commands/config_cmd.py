"""`pyramid-repro config` and `pyramid-repro schema`."""

from __future__ import annotations

import argparse

import yaml

from pyramid_repro.cliutil import add_config_args, config_from_args
from pyramid_repro.config import schema_yaml


def main_config(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="pyramid-repro config", description="Print the resolved configuration.")
    add_config_args(ap)
    ap.add_argument("--hash", action="store_true", help="print only the config hash")
    args = ap.parse_args(argv)
    cfg = config_from_args(args)
    if args.hash:
        print(cfg.config_hash())
    else:
        print(f"# profile: {cfg.profile}  config hash: {cfg.config_hash()}")
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def main_schema(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="pyramid-repro schema",
        description="Print the config JSON schema (YAML) generated from src/pyramid_repro/tree.py. "
        "replication/schemas/config.schema.yaml must equal this output (a test checks it).",
    )
    ap.parse_args(argv)
    print(schema_yaml(), end="")
    return 0


main = main_config
