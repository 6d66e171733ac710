"""`pyramid-repro study`: the paper's user study (Sec. 5), run locally: create, serve, report.

    pyramid-repro study create --name N --experiments pyramid fullseq [--checkpoint DIR ...] --raters K
    pyramid-repro study serve  --name N [--host 127.0.0.1] [--port P]
    pyramid-repro study report --name N [--out DIR]

The study lives in results/<profile>/studies/<name>/ (study.sqlite + videos/); docs/user_study.md describes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyramid_repro.cliutil import add_config_args, config_from_args
from pyramid_repro.config import Config, ConfigError
from pyramid_repro.provenance import atomic_write_bytes, provenance
from pyramid_repro.study.analysis import analyse
from pyramid_repro.study.app import bind, serve
from pyramid_repro.study.db import connect, get_meta, sources_table, votes_table
from pyramid_repro.study.design import create_study, load_sample_set
from pyramid_repro.study.render import write_report

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="pyramid-repro study",
        description="The paper's user study, run locally: raters compare two models' videos of the same prompt on "
        "aesthetic quality, motion smoothness and semantic alignment (A / B / same). `create` builds the pairs "
        "and one rater link per rater, `serve` runs the rating web page, `report` writes "
        "user_study.{pdf,csv,md}. Everything lives in results/<profile>/studies/<name>/study.sqlite.")
    sub = ap.add_subparsers(dest="action", required=True, metavar="{create,serve,report}")

    c = sub.add_parser("create", help="build a study from sampled videos and write one rater link per rater",
                       description="Pairs every two models on every prompt all of them sampled; each rater sees "
                       "every pair once, sides balanced across raters, order shuffled, plus --repeats pairs shown "
                       "again with the sides swapped. Videos are re-encoded once to VP9/WebM for the browser.")
    add_config_args(c)
    c.add_argument("--name", required=True, help="study name (folder results/<profile>/studies/<name>/)")
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
                       description="Starts the rating web app. Raters open http://HOST:PORT/r/<token>. It binds to "
                       "127.0.0.1 unless --host names another address. Stop it with Ctrl-C; votes are committed "
                       "before the page says 'saved', so a crash loses none of them.")
    add_config_args(s)
    s.add_argument("--name", required=True, help="study name")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")

    r = sub.add_parser("report", help="win/tie/loss rates, Bradley-Terry, agreement -> user_study.{pdf,csv,md}",
                       description="Analyses the votes: per question and model pair win/tie/loss rates with 95%% "
                       "intervals (crossed bootstrap over raters and prompts), Bradley-Terry scores (more than two "
                       "models), rater agreement, and the stacked-bar figure of the paper's user study.")
    add_config_args(r)
    r.add_argument("--name", required=True, help="study name")
    r.add_argument("--out", type=Path, help="output folder (default: the profile's reports folder)")
    r.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    return ap


def study_db(cfg: Config, name: str, must_exist: bool = True) -> Path:
    """The database of study `name`; a ConfigError names the path when it is missing."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--name {name!r}: expected a plain folder name")
    db = cfg.layout.study_db(name)
    if must_exist and not db.is_file():
        raise ConfigError(f"unknown study {name!r}: {db} not found (create it with `pyramid-repro study create "
                          f"--name {name} ...`)")
    return db


def checkpoint_name(folder: Path, suite: str) -> str:
    """A --checkpoint folder's model name: its own name, or the first parent that is neither `samples` nor the
    suite (compare/<name>/samples -> <name>, release-384p/samples/<suite> -> release-384p)."""
    parts = [p for p in reversed(folder.resolve().parts) if p not in ("samples", suite, "/")]
    return parts[0] if parts else str(folder)


def create(cfg: Config, args: argparse.Namespace) -> int:
    suite = args.suite or cfg.eval.suite
    sets = [load_sample_set(cfg.layout.samples(e, suite), e) for e in args.experiments]
    sets += [load_sample_set(d, checkpoint_name(d, suite)) for d in args.checkpoint]
    if len(sets) < 2:
        raise ConfigError("a study needs at least two sample folders (--experiments and/or --checkpoint)")
    db = study_db(cfg, args.name, must_exist=False)
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


def run_server(cfg: Config, args: argparse.Namespace) -> int:
    db = study_db(cfg, args.name)
    conn = connect(db)
    tokens = [t for (t,) in conn.execute("SELECT token FROM raters ORDER BY id")]
    conn.close()
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    where = ("localhost only: other machines cannot connect" if args.host in LOCAL_HOSTS else
             f"{args.host}: reachable from other machines")
    print(f"serving study {args.name!r} on http://{url_host}:{port}/ (bound to {where})", flush=True)
    print(f"  database {db}; rater links:", flush=True)
    for t in tokens:
        print(f"    http://{url_host}:{port}/r/{t}", flush=True)
    serve(db, sock)
    return 0


def report(cfg: Config, args: argparse.Namespace) -> int:
    db = study_db(cfg, args.name)
    conn = connect(db)
    meta, sources, rows = get_meta(conn), sources_table(conn), votes_table(conn)
    conn.close()
    if not rows:
        raise ConfigError(f"{db}: the study has no votes yet")
    a = analyse(rows, list(meta["models"]), n_resamples=args.resamples, seed=int(meta.get("seed", 0)))
    paths = write_report(a, meta, sources, provenance(cfg), args.out or cfg.layout.reports)
    for p in paths:
        print(f"wrote {p}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    action = {"create": create, "serve": run_server, "report": report}[args.action]
    try:
        return action(cfg, args)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
