"""`pyramid-repro study`: the paper's user study (Sec. 5), run locally: create, serve, report.

    pyramid-repro study create --name N --experiments pyramid fullseq [--checkpoint DIR ...] --raters K
    pyramid-repro study serve  --name N [--host 127.0.0.1] [--port P] [--public-url URL] [--request-timeout S]
    pyramid-repro study report --name N [--out DIR]

The study lives in results/<profile>/studies/<name>/ (study.sqlite + videos/), its report is
user_study_<name>.{pdf,csv,md}; results/ is found like every command finds it (`results` of the config, relative to
the working directory). docs/user_study.md describes it. Every error ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import socket
import sqlite3
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pyramid_repro.cliutil import add_config_args, config_from_args
from pyramid_repro.config import Config, ConfigError
from pyramid_repro.layout import STUDY_NAME
from pyramid_repro.provenance import atomic_write_bytes, provenance
from pyramid_repro.study.analysis import analyse
from pyramid_repro.study.app import MAX_BODY, REQUEST_TIMEOUT, bind, serve
from pyramid_repro.study.db import connect, get_meta, sources_table, votes_table
from pyramid_repro.study.design import create_study, load_sample_set
from pyramid_repro.study.render import write_report

# the numeric options' ranges (inclusive; None: no upper bound), checked after parsing for every subcommand
LIMITS: dict[str, tuple[int, int | None, str]] = {
    "raters": (1, None, ""), "repeats": (0, None, ""), "max_prompts": (0, None, " (0 = all prompts)"),
    "seed": (0, None, ""), "port": (0, 65535, " (0 = any free port)"), "resamples": (1, None, ""),
}


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (argparse's own print the usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _check_limits(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a number outside its option's range (LIMITS), e.g. --max-prompts -3, in one line."""
    for dest, (lo, hi, note) in LIMITS.items():
        value = getattr(args, dest, None)
        if value is not None and not (lo <= value and (hi is None or value <= hi)):
            want = f"{lo}..{hi}" if hi is not None else f"an integer >= {lo}"
            ap.error(f"--{dest.replace('_', '-')} {value}: expected {want}{note}")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="pyramid-repro study",
        description="The paper's user study, run locally: raters compare two models' videos of the same prompt on "
        "aesthetic quality, motion smoothness and semantic alignment (A / B / same). `create` builds the pairs "
        "and one rater link per rater, `serve` runs the rating web page, `report` writes "
        "user_study_<name>.{pdf,csv,md}. Everything lives in results/<profile>/studies/<name>/study.sqlite "
        "(results/ as every command finds it: relative to the working directory unless `results` is absolute).")
    sub = ap.add_subparsers(dest="action", required=True, metavar="{create,serve,report}")

    c = sub.add_parser("create", help="build a study from sampled videos and write one rater link per rater",
                       description="Pairs every two models on every prompt all of them sampled; each rater sees "
                       "every pair once, sides balanced across raters, order shuffled, plus --repeats pairs shown "
                       "again with the sides swapped. Videos are re-encoded once to VP9/WebM for the browser.")
    add_config_args(c)
    c.add_argument("--name", required=True, help="study name: up to 64 letters, digits, '.', '_' or '-' (folder "
                   "results/<profile>/studies/<name>/, report user_study_<name>.*)")
    c.add_argument("--experiments", nargs="*", default=[], metavar="EXPERIMENT",
                   help="experiments whose samples to compare (results/<profile>/<experiment>/samples/<suite>/)")
    c.add_argument("--checkpoint", nargs="*", default=[], type=Path, metavar="DIR",
                   help="further sample folders: a compare folder (results/<profile>/compare/<name>) or any folder "
                   "holding samples.json (e.g. the release's samples); named by the folder")
    c.add_argument("--suite", help="prompt suite of the experiments' samples (default: eval.suite)")
    c.add_argument("--raters", type=int, required=True, help="number of rater links to create")
    c.add_argument("--repeats", type=int, default=0,
                   help="pairs each rater sees twice (sides swapped) to measure consistency (default 0)")
    c.add_argument("--max-prompts", type=int, default=0, help="use only the first N common prompts (0 = all)")
    c.add_argument("--seed", type=int, default=0, help="seed of the sides and orders (default 0)")

    s = sub.add_parser("serve", help="serve the rating page (localhost unless --host says otherwise)",
                       description="Starts the rating web app and prints every rater's link. It binds to "
                       "127.0.0.1 unless --host names another address. Behind a reverse proxy (HTTPS for raters "
                       "elsewhere), keep the default host and give the proxy's address as --public-url. Stop it "
                       "with Ctrl-C; votes are committed before the page says 'saved', so a crash loses none.")
    add_config_args(s)
    s.add_argument("--name", required=True, help="study name")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 or :: = every address)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    s.add_argument("--public-url", metavar="URL",
                   help="the address raters use, for the printed links, e.g. https://study.example when a reverse "
                   "proxy forwards it to this server (default: the bound address)")
    s.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT, metavar="SECONDS",
                   help=f"a request's headers must arrive within this many seconds, and then its body (at most "
                   f"{MAX_BODY} bytes) within as many again; a slower connection is closed (default "
                   f"{REQUEST_TIMEOUT:g})")

    r = sub.add_parser("report", help="win/tie/loss rates, Bradley-Terry, agreement -> "
                       "user_study_<name>.{pdf,csv,md}",
                       description="Analyses the votes: per question and model pair win/tie/loss rates with 95%% "
                       "intervals (crossed bootstrap over raters and prompts), Bradley-Terry scores (more than two "
                       "models), rater agreement, and the stacked-bar figure of the paper's user study.")
    add_config_args(r)
    r.add_argument("--name", required=True, help="study name")
    r.add_argument("--out", type=Path, help="output folder (default: the profile's reports folder)")
    r.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    return ap


def results_note(cfg: Config) -> str:
    """Where results/ was looked for, for an error about a missing study or samples folder: a relative `results`
    is relative to the working directory, as for every command (the Snakemake workflow relies on it)."""
    if Path(cfg.results).is_absolute():
        return ""
    return (f" (`results: {cfg.results}` is relative to the working directory {Path.cwd()}, as for every command: "
            "run from the folder that holds it, or pass --set results=DIR)")


def study_db(cfg: Config, name: str, must_exist: bool = True) -> Path:
    """The database of study `name`; a ConfigError names the path when it is missing."""
    if not re.fullmatch(STUDY_NAME, name):
        shown = repr(name) if len(name) <= 40 else f"{name[:40]!r}... ({len(name)} characters)"
        raise ConfigError(f"--name {shown}: expected 1 to 64 letters, digits, '.', '_' or '-', starting with a "
                          "letter or digit (the name of the study's folder and report files)")
    db = cfg.layout.study_db(name)
    if must_exist and not db.is_file():
        raise ConfigError(f"unknown study {name!r}: {db.absolute()} not found{results_note(cfg)}; create it with "
                          f"`pyramid-repro study create --name {name} ...`")
    return db


def checkpoint_name(folder: Path, suite: str) -> str:
    """A --checkpoint folder's model name: its own name, or the first parent that is neither `samples` nor the
    suite (compare/<name>/samples -> <name>, release-384p/samples/<suite> -> release-384p)."""
    parts = [p for p in reversed(folder.resolve().parts) if p not in ("samples", suite, "/")]
    return parts[0] if parts else str(folder)


def create(cfg: Config, args: argparse.Namespace) -> int:
    db = study_db(cfg, args.name, must_exist=False)
    suite = args.suite or cfg.eval.suite
    for e in args.experiments:
        folder = cfg.layout.samples(e, suite)
        if not folder.is_dir():
            raise ConfigError(f"--experiments {e}: no samples folder {folder.absolute()}{results_note(cfg)}")
    sets = [load_sample_set(cfg.layout.samples(e, suite), e) for e in args.experiments]
    sets += [load_sample_set(d, checkpoint_name(d, suite)) for d in args.checkpoint]
    if len(sets) < 2:
        raise ConfigError("a study needs at least two sample folders (--experiments and/or --checkpoint)")
    made = create_study(db, cfg.layout.study_videos(args.name), args.name, sets, args.raters, args.repeats,
                        args.seed, args.max_prompts, provenance(cfg))
    links = [f"/r/{t}" for t in made.tokens]
    atomic_write_bytes(db.parent / "rater_links.txt", ("\n".join(links) + "\n").encode())
    print(f"created study {args.name!r}: {db}")
    print(f"  models {[s.model for s in sets]}, {made.prompts} prompts, {made.videos} videos (WebM), "
          f"{made.comparisons_per_rater} comparisons per rater")
    print(f"  rater links (append to the address `study serve` prints), also in {db.parent / 'rater_links.txt'}:")
    for link in links:
        print(f"    {link}")
    return 0


def public_origin(url: str) -> str:
    """--public-url as an origin without a trailing slash (https://study.example[:port]); a ConfigError says what
    was expected. A sub-path is refused: the page's requests go to /api/... and /video/... of its origin."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"--public-url {url!r}: expected http(s)://HOST[:PORT] (e.g. https://study.example), with "
                          "no path: the reverse proxy must forward the whole origin to this server")
    try:
        _ = parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        raise ConfigError(f"--public-url {url!r}: the port is not a number from 0 to 65535") from None
    return f"{parts.scheme}://{parts.netloc}"


def binding(host: str, port: int, public_url: str | None) -> tuple[str, list[str]]:
    """Where a server bound to the address `host` (an IP, as the socket reports it) is reachable, and the base of
    the rater links: the public URL when given, else the bound address; for a wildcard address (0.0.0.0, ::),
    which no rater can open, this machine's name, with a note on what to pass instead."""
    ip = ipaddress.ip_address(host.split("%")[0])
    shown = f"[{host}]" if ":" in host else host
    if ip.is_loopback:
        where = f"{shown}: localhost only, other machines cannot connect"
    elif ip.is_unspecified:
        where = f"{shown}: every address of this machine, reachable from other machines"
    else:
        where = f"{shown}: reachable from other machines that can route to it"
    if public_url:
        return public_origin(public_url), [where]
    name = socket.gethostname() if ip.is_unspecified else host
    base = f"http://{f'[{name}]' if ':' in name else name}:{port}"
    notes = [where]
    if ip.is_unspecified:
        notes.append(f"the links use this machine's name {name!r}; if raters know it by another name or address, "
                     f"or reach it through a reverse proxy, restart with --public-url (e.g. --public-url "
                     f"http://<address>:{port}, or https://study.example for a proxy)")
    return base, notes


def run_server(cfg: Config, args: argparse.Namespace) -> int:
    db = study_db(cfg, args.name)
    if not args.request_timeout > 0:
        raise ConfigError(f"--request-timeout {args.request_timeout}: expected a number of seconds > 0")
    if args.public_url:
        public_origin(args.public_url)  # refused before anything is bound
    conn = connect(db)
    tokens = [t for (t,) in conn.execute("SELECT token FROM raters ORDER BY id")]
    conn.close()
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    base, notes = binding(host, port, args.public_url)
    url_host = f"[{host}]" if ":" in host else host
    print(f"serving study {args.name!r} on http://{url_host}:{port}/ (bound to {notes[0]})", flush=True)
    for note in notes[1:]:
        print(f"  {note}", flush=True)
    print(f"  database {db}; rater links:", flush=True)
    for t in tokens:
        print(f"    {base}/r/{t}", flush=True)
    serve(db, sock, args.request_timeout)
    return 0


def report(cfg: Config, args: argparse.Namespace) -> int:
    db = study_db(cfg, args.name)
    conn = connect(db)
    meta, sources, rows = get_meta(conn), sources_table(conn), votes_table(conn)
    conn.close()
    if not rows:
        raise ConfigError(f"{db}: the study has no votes yet")
    a = analyse(rows, list(meta["models"]), n_resamples=args.resamples, seed=int(meta.get("seed", 0)))
    paths = write_report(a, meta, sources, provenance(cfg), args.out or cfg.layout.reports, args.name)
    for p in paths:
        print(f"wrote {p}")
    return 0


def os_error_line(action: str, args: argparse.Namespace, e: OSError) -> str:
    """One line for an operating-system error of a study command: what failed, on which file or address."""
    what = e.strerror or str(e)
    if e.filename is not None:
        what += f": {os.fsdecode(e.filename)}"
    if action == "serve" and e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) and e.filename is None:
        what = (f"cannot listen on {args.host}:{args.port}: {what} (choose another --port, 0 = any free one, or "
                "another --host)")
    return f"pyramid-repro study {action}: {what}"


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    _check_limits(ap, args)
    cfg = config_from_args(args)
    action = {"create": create, "serve": run_server, "report": report}[args.action]
    try:
        return action(cfg, args)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except OSError as e:  # a port in use, a full disk, a folder without write permission: one line, no traceback
        print(" ".join(os_error_line(args.action, args, e).split()), file=sys.stderr)
        return 2
    except sqlite3.Error as e:
        print(f"pyramid-repro study {args.action}: database error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
