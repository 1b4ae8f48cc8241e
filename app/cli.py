"""Command-line access to the same services as the UI; prints the same JSON.

    python -m app.cli face IMAGE [--threshold 0.5] [--face 1] [--crop] [--model seqfake]
    python -m app.cli video VIDEO [--frames 16] [--crop]
    python -m app.cli query --bag DIR_OR_VIDEO --word WORD
    python -m app.cli neighbours IMAGE [-k 8] [--label sneaker]
    python -m app.cli classify IMAGE [--model abcnorm] [--cam-class sneaker]
    python -m app.cli status         # models, and the background build's queue (as /status)

Each tab (``app/tabs/``) adds its own commands. Bad input exits with status 2 and a
one-line message on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from app.inputs import InputError
from app.tabs import tabs
from runtime.cli import run_main
from runtime.engine import Engine


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for _, tab in tabs():
        tab.add_cli(sub)
    sub.add_parser("status", help="which models are served, provider and versions")
    return p


def run(args: argparse.Namespace) -> dict:
    engine = Engine(args.artifacts)
    if args.cmd == "status":
        from app.build import read_status

        return {"manifest_error": engine.manifest_error, "build": read_status(engine.artifacts),
                "models": engine.status()}
    for _, tab in tabs():
        report = tab.run_cli(args, engine)
        if report is not None:
            return report
    raise InputError(f"unknown command {args.cmd}")


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    report = run(_parser().parse_args(argv))
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
