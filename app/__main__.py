"""The main command: serve the app at once, and build the default models that are missing
behind it (a background worker; each tab answers when its model lands; progress on the page).

    python -m app [--artifacts DIR] [--port 7860] [--expose [--no-auth]] [--no-build] [--build-only]
                  [--serve-only] [--smoke] [--only RUN,...]

Binds 127.0.0.1 unless ``--expose`` is given; then ``REPLENS_AUTH=user:password`` is
required (basic authentication), or ``--no-auth`` to serve without a login, with a warning
on the console and on the page; ``REPLENS_AUTH``, when set, asks for a login on 127.0.0.1
too (a reverse proxy on this machine: docs/deploy.md). A busy port is refused before anything
is built. ``--serve-only`` (the torch-free serving
install, ``bash scripts/serve.sh``) serves an existing artifacts folder and refuses to start
without one; without torch nothing can be built, so ``--no-build`` is then implied. Flags
that contradict each other (``--build-only --no-build``, ``--no-auth`` without
``--expose``, ``--no-build --smoke``, ...) are refused in one line, exit 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a file, not with python -m
    print("error: app/__main__.py is part of the RepLens package: run `python -m app ...` "
          "from the repository folder (or `replens serve ...` once installed by "
          "scripts/setup.sh)", file=sys.stderr)
    raise SystemExit(2)

DEFAULT_PORT = 7860
PORT_VAR = "REPLENS_PORT"

# Flags that cannot be given together: (flag, flag, why), checked after parsing.
EXCLUSIVE = [
    ("build_only", "no_build", "--build-only builds and exits, --no-build builds nothing"),
    ("build_only", "serve_only", "--build-only builds and exits, --serve-only builds nothing"),
    ("build_only", "expose", "--build-only serves nothing, so there is nothing to expose"),
    ("build_only", "no_auth", "--build-only serves nothing, so there is no login to drop"),
    ("build_only", "retinaface_weights", "--build-only serves nothing, so no face is detected"),
    ("no_build", "smoke", "--smoke sets the build's budgets and --no-build builds nothing"),
    ("serve_only", "smoke", "--smoke sets the build's budgets and --serve-only builds nothing"),
    ("no_build", "only", "--only picks the runs to build and --no-build builds nothing"),
    ("serve_only", "only", "--only picks the runs to build and --serve-only builds nothing"),
]


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def port_number(text: str) -> int:
    """A TCP port: 1-65535, or 0 for any free port (the argparse type of ``--port``)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number: give 1-65535 "
                                         f"(default {DEFAULT_PORT})") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: give 1-65535 "
                                         f"(default {DEFAULT_PORT})")
    return port


def _port_from_env() -> int:
    """``REPLENS_PORT`` when set, else the default port; a bad value names the variable."""
    from runtime.cli import UserError

    text = os.environ.get(PORT_VAR, "").strip()
    if not text:
        return DEFAULT_PORT
    try:
        return port_number(text)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"{PORT_VAR}={text!r}: {exc}; fix the variable or unset it "
                        f"(--port N wins over it)") from None


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that contradict each other (one line, exit 2).

    Raises:
        runtime.cli.UserError: the first contradictory pair, named with the reason.
    """
    from runtime.cli import UserError

    for a, b, why in EXCLUSIVE:
        if getattr(args, a) and getattr(args, b):
            raise UserError(f"{_flag(a)} and {_flag(b)} cannot be used together: {why}; "
                            f"drop one of them")
    if args.no_auth and not args.expose:
        raise UserError("--no-auth only applies with --expose (without --expose the app "
                        "listens on 127.0.0.1 and asks no login): drop --no-auth")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runtime.cli import Parser

    p = Parser(prog="python -m app", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--port", type=port_number, default=None,
                   help=f"port to listen on (default: ${PORT_VAR} or {DEFAULT_PORT}; 0: any "
                        f"free port)")
    p.add_argument("--expose", action="store_true",
                   help="listen on all interfaces (0.0.0.0) instead of 127.0.0.1")
    p.add_argument("--no-auth", action="store_true",
                   help="with --expose: serve without a login (refused unless given; warned)")
    p.add_argument("--no-build", action="store_true", help="serve what exists; build nothing")
    p.add_argument("--build-only", action="store_true", help="build the artifacts and exit")
    p.add_argument("--serve-only", action="store_true",
                   help="serve an existing artifacts folder, build nothing; refused when the "
                        "folder has no manifest (the torch-free install: scripts/serve.sh)")
    p.add_argument("--smoke", action="store_true",
                   help="build with tiny training budgets (pipeline check, not useful models)")
    p.add_argument("--only", metavar="RUN,...",
                   help="build only these default runs (others are served if present)")
    p.add_argument("--retinaface-weights", help="use RetinaFace with this local weights file")
    from app.settings import add_arguments

    add_arguments(p)  # --concurrency, --queue-size, --request-timeout-s, ... (app/serve.yaml)
    return p.parse_args(argv)


def _serve_only_checks(args: argparse.Namespace, artifacts) -> None:
    """``--serve-only``: refuse a folder without artifacts, say when the face detector is
    missing; without torch (the serving install) building is impossible: ``--no-build``."""
    import importlib.util

    from runtime.cli import UserError
    from runtime.manifest import manifest_path
    from runtime.mtcnn import RECORD_FILE

    from app.build import INSTALL_LOG, installing

    no_torch = importlib.util.find_spec("torch") is None
    if no_torch and not args.serve_only and not args.no_build and not args.build_only \
            and installing() is not None:
        print(f"[app] the training stack is installing behind the page (log: {INSTALL_LOG}); "
              f"the missing models are built once it is done", flush=True)
        no_torch = False
    if args.serve_only or no_torch:
        if args.build_only:
            raise UserError("--build-only needs the full install (torch): bash scripts/run.sh "
                            "--build-only" if no_torch else "--serve-only and --build-only "
                            "exclude each other")
        if not args.no_build and not args.serve_only:
            print("[app] torch is not installed (the serving install): serving only, "
                  "nothing is built", flush=True)
        args.no_build = True
    if not args.serve_only:
        return
    if not manifest_path(artifacts).is_file():
        raise UserError(
            f"nothing to serve: {artifacts} holds no exported models ({manifest_path(artifacts)} "
            f"is missing). Build them with the full install (bash scripts/run.sh --build-only "
            f"--artifacts {artifacts}), or name the folder with --artifacts DIR or "
            f"REPLENS_ARTIFACTS.")
    if not (artifacts / RECORD_FILE).is_file() and no_torch:
        print(f"[app] WARNING: {artifacts} holds no ONNX face detector ({RECORD_FILE}): the "
              f"face tab will only analyse crops until `python -m export.mtcnn --artifacts "
              f"{artifacts}` is run with the full install", flush=True)


def _check_manifest(artifacts) -> None:
    """Refuse a manifest that exists but cannot be read (invalid JSON names its line and
    column): serving would show no model, and a build would write a new one over it. (One
    of another format version is rebuilt by the build.)"""
    from runtime.cli import UserError
    from runtime.manifest import ManifestError, manifest_path, read_manifest

    if manifest_path(artifacts).is_file():
        try:
            read_manifest(artifacts)
        except ManifestError as exc:
            if isinstance(exc.__cause__, (ValueError, OSError)):  # bad JSON, unreadable
                raise UserError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    from runtime.cli import run_main

    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    check_flags(args)
    if args.port is None:
        args.port = _port_from_env()
    t0 = time.time()
    from app.settings import configure, from_args
    from runtime.cli import artifacts_folder

    configure(from_args(args))  # a bad limit is refused before anything runs
    artifacts = artifacts_folder(args.artifacts)  # a file instead of a folder is refused
    _check_manifest(artifacts)
    if args.serve_only or not args.no_build:
        _serve_only_checks(args, artifacts)
    if not args.build_only:  # refuse a bad login setting or a busy port before any build
        from app.server import check_port_free, serving_auth

        serving_auth(args.expose, args.no_auth)
        check_port_free("0.0.0.0" if args.expose else "127.0.0.1", args.port)
    from app.build import ensure_artifacts, iter_runs, plan, start_background

    only = iter_runs(args.only)
    plan(artifacts, args.smoke, only)  # an unknown --only run is refused before anything runs
    if args.build_only:
        ensure_artifacts(artifacts, smoke=args.smoke, only=only)
        print(f"[app] artifacts ready in {artifacts}")
        return 0
    # serve at once; what is missing is built behind the page by a worker process
    worker = None if args.no_build else start_background(artifacts, smoke=args.smoke, only=only)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from app.server import launch

    return launch(artifacts, port=args.port, expose=args.expose,
                  retinaface_weights=args.retinaface_weights, t0=t0, no_auth=args.no_auth,
                  worker=worker)


if __name__ == "__main__":
    sys.exit(main())
