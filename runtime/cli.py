"""The error contract of every command-line entry point.

``sys.exit(run_main(main))``: a user's mistake (a bad path, a bad value, a config typo, an
unreadable image, a model that is not there) exits 2 with one line ``error: ...`` that says
what was wrong; anything else is a bug in RepLens: its traceback is printed, with a line
asking to report it, and the exit status is 1.
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable

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


def is_user_error(exc: BaseException) -> bool:
    return isinstance(exc, USER_ERRORS) or bool(getattr(exc, "user_error", False))


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
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the contract: user errors vs bugs
        if is_user_error(exc):
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr)
        return 1
