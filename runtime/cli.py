"""The error contract of every command-line entry point.

``sys.exit(run_main(main))``: a user's mistake (a bad path, a bad value, a config typo, an
unreadable image, a model that is not there) exits 2 with one line ``error: ...`` that says
what was wrong; anything else is a bug in RepLens: its traceback is printed, with a line
asking to report it, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, NoReturn

BUG_LINE = ("This is a bug in RepLens, not a mistake of yours: please report it to the "
            "project's issue tracker with the traceback above and the command you ran.")


class UserError(Exception):
    """A mistake the user can fix; the message says how."""


# What counts as the user's mistake: bad values (ValueError: config errors, bad inputs,
# data-format errors), missing or unreadable files, and errors that mark themselves with
# ``user_error = True`` (a model that cannot be served, a missing manifest, a failed export).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError,
                                                NotADirectoryError, IsADirectoryError,
                                                PermissionError)


# The project's own packages: a missing module among them is a bug, any other is a package
# that this Python environment lacks.
PROJECT_PACKAGES = frozenset({"app", "runtime", "training", "export", "methods", "models",
                              "tests", "scripts"})


def is_user_error(exc: BaseException) -> bool:
    return (isinstance(exc, USER_ERRORS) or bool(getattr(exc, "user_error", False))
            or missing_package(exc) is not None)


def missing_package(exc: BaseException) -> str | None:
    """The third-party package whose import failed (``numpy``), or None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return None if top in PROJECT_PACKAGES else top


def environment_advice(package: str) -> str:
    """What to say when ``package`` cannot be imported: which Python ran, and the one that
    has the packages."""
    return (f"the Python package {package!r} is not installed for {sys.executable}: run "
            f"`bash scripts/run.sh` once (it sets up .venv), then use .venv/bin/python "
            f"(for example `.venv/bin/python -m app`), or activate .venv")


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line: ``prog: error: ... (see prog
    --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} "
                     f"(see `{self.prog} --help`)\n")


def artifacts_folder(flag: str | None, must_exist: bool = False) -> Path:
    """The artifacts folder of a command (``--artifacts``, else ``REPLENS_ARTIFACTS``, else
    ``./artifacts``), refused in one line naming where it came from when it is a file or,
    with ``must_exist``, when it does not exist.

    Raises:
        UserError: the folder is a file, or is missing (the message says how to build it).
    """
    from runtime.artifacts import DEFAULT_DIR, ENV_VAR, artifacts_dir

    path = artifacts_dir(flag)
    if flag:
        source = f"--artifacts {flag}"
    elif os.environ.get(ENV_VAR):
        source = f"{ENV_VAR}={os.environ[ENV_VAR]}"
    else:
        source = f"the default artifacts folder ./{DEFAULT_DIR}"
    if path.exists() and not path.is_dir():
        raise UserError(f"{source}: {path} is a file, not a folder; name the artifacts folder "
                        f"instead (the one that holds runs/ and manifest.json)")
    if must_exist and not path.is_dir():
        raise UserError(f"{source}: the artifacts folder {path} does not exist; build the "
                        f"default models into it with `python -m app --build-only --artifacts "
                        f"{path}`, or name the folder that holds them")
    return path


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (KeyError's quotes dropped)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(msg).split()) or type(exc).__name__


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None
             ) -> int:
    """Run ``main(argv)`` under the error contract; returns the exit status."""
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output went away (`| head`): not a bug
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the contract: user errors vs bugs
        package = missing_package(exc)
        if package is not None:
            print(f"error: {environment_advice(package)}", file=sys.stderr)
            return 2
        if is_user_error(exc):
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr)
        return 1


# ``replens COMMAND ...``: the console script of the installed project. Each command runs one
# module entry point with fixed leading arguments (``replens face x.jpg`` is ``python -m
# app.cli face x.jpg``, ``replens build`` is ``python -m app --build-only``).
CONSOLE_COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "serve": ("app.__main__", (), "start the app; missing default models are built behind it"),
    "build": ("app.__main__", ("--build-only",), "build the missing default models and exit"),
    "train": ("training.__main__", (), "train a method (python -m training)"),
    "export": ("export.__main__", (), "export trained runs to ONNX (python -m export)"),
    "import": ("export.published", (), "import the authors' published weights as a run"),
    "face": ("app.cli", ("face",), "check faces for edits (images or a folder)"),
    "video": ("app.cli", ("video",), "check every person in a video"),
    "query": ("app.cli", ("query",), "ask whether a bag of images holds a word"),
    "neighbours": ("app.cli", ("neighbours",), "nearest gallery images"),
    "classify": ("app.cli", ("classify",), "top-5 classes with Grad-CAM"),
    "status": ("app.cli", ("status",), "which models are served and how the build is going"),
}


def console(argv: list[str] | None = None) -> int:
    """The ``replens`` console script: ``replens COMMAND ARGS`` (``replens --help`` lists them)."""
    import importlib

    args = sys.argv[1:] if argv is None else list(argv)
    usage = ("usage: replens COMMAND [ARGS ...]\n" + "".join(
        f"  {name:<10} {about}\n" for name, (_, _, about) in CONSOLE_COMMANDS.items())
        + "`replens COMMAND --help` shows a command's options.")
    if not args or args[0] in ("-h", "--help"):
        print(usage, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] not in CONSOLE_COMMANDS:
        print(f"replens: error: unknown command {args[0]!r}; commands: "
              f"{', '.join(CONSOLE_COMMANDS)} (see `replens --help`)", file=sys.stderr)
        return 2
    module, lead, _ = CONSOLE_COMMANDS[args[0]]
    try:
        main = importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        if missing_package(exc) is None:
            raise
        print(f"error: {environment_advice(missing_package(exc) or '')}", file=sys.stderr)
        return 2
    return int(main([*lead, *args[1:]]) or 0)
