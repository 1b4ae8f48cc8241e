"""Command-line access to the same services as the UI; prints the same JSON.

    python -m app.cli face IMAGE [--threshold 0.5] [--face 1] [--crop] [--model seqfake]
    python -m app.cli video VIDEO [--frames 16] [--crop]
    python -m app.cli query --bag DIR_OR_VIDEO --word WORD
    python -m app.cli neighbours IMAGE [-k 8] [--label sneaker]
    python -m app.cli classify IMAGE [--model abcnorm] [--cam-class sneaker]
    python -m app.cli status         # models, and the background build's queue (as /status)

Each tab (``app/tabs/``) adds its own commands. ``--artifacts DIR`` may come before or after
the command. Bad input exits with status 2 and a one-line message on stderr; ``status``
shows times as local time and age ("2026-12-07 12:03 (5 min ago)").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

if __name__ == "__main__" and not __package__:  # run as a file, not with python -m
    print("error: app/cli.py is part of the RepLens package: run `python -m app.cli ...` "
          "from the repository folder (or `replens face|query|... ...` once installed by "
          "scripts/setup.sh)", file=sys.stderr)
    raise SystemExit(2)

ARTIFACTS_HELP = "artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)"
# keys of the build status that hold a moment (seconds since the epoch)
TIME_KEYS = frozenset({"started", "finished", "ended", "updated"})


def _parser() -> argparse.ArgumentParser:
    from app.tabs import tabs
    from runtime.cli import Parser

    p = Parser(prog="python -m app.cli", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help=ARTIFACTS_HELP)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND",
                           parser_class=Parser)
    for _, tab in tabs():
        tab.add_cli(sub)
    sub.add_parser("status", help="which models are served, provider and versions")
    for command in sub.choices.values():  # global options after the command too
        command.add_argument("--artifacts", default=argparse.SUPPRESS, help=ARTIFACTS_HELP)
    return p


def moment(seconds: float, now: float | None = None) -> str:
    """A time in seconds since the epoch as local time and age: "2026-12-07 12:03 (5 min
    ago)"."""
    now = time.time() if now is None else now
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
    age = now - seconds
    span = abs(age)
    if span < 60:
        words = f"{span:.0f} s"
    elif span < 3600:
        words = f"{span / 60:.0f} min"
    elif span < 86400:
        words = f"{span / 3600:.1f} h"
    else:
        words = f"{span / 86400:.1f} days"
    return f"{when} ({words} ago)" if age >= 0 else f"{when} (in {words})"


def readable_times(value: Any, now: float | None = None) -> Any:
    """``value`` (the build status) with every time of :data:`TIME_KEYS` as :func:`moment`."""
    if isinstance(value, dict):
        return {k: moment(v, now) if k in TIME_KEYS and isinstance(v, (int, float))
                and not isinstance(v, bool) and v > 0 else readable_times(v, now)
                for k, v in value.items()}
    if isinstance(value, list):
        return [readable_times(v, now) for v in value]
    return value


def run(args: argparse.Namespace) -> dict:
    from app.inputs import InputError, cli_requests
    from app.tabs import tabs
    from runtime.cli import artifacts_folder
    from runtime.engine import Engine

    engine = Engine(artifacts_folder(args.artifacts, must_exist=True))
    if args.cmd == "status":
        from app.build import read_status

        return {"manifest_error": engine.manifest_error,
                "build": readable_times(read_status(engine.artifacts)),
                "models": engine.status()}
    with cli_requests():  # messages name the CLI's flags (--crop), not the page's checkboxes
        for _, tab in tabs():
            report = tab.run_cli(args, engine)
            if report is not None:
                return report
    raise InputError(f"unknown command {args.cmd}")


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    from runtime.cli import run_main

    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    report = run(_parser().parse_args(argv))
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
