"""``python -m export --all`` / ``python -m export RUN [RUN ...]``.

Exports each finished training run under ``<artifacts>/runs/`` to
``<artifacts>/onnx/<run>.onnx`` (and its static INT8 version ``<run>.int8.onnx``, served
only when measured faster and as accurate by the rule in ``export/int8.yaml``), with the
retrieval gallery of an encoder, records it in ``<artifacts>/manifest.json``, then writes
the example inputs for the app (each method's post-export hooks, see
``export/methods/<name>/assets.py``).

A re-export writes its files under fresh names (``<run>.2.onnx``, ...) and switches the
manifest to them in one rename: Ctrl-C (or SIGTERM) at any point leaves the previous model
served. Each run is locked while it is exported (``runs/<run>/lock``): an export of a run
that is being trained or exported elsewhere is refused (exit 2), naming that process.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from runtime.cli import Parser, artifacts_folder, run_main


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = Parser(prog="python -m export", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run names under <artifacts>/runs (default with --all: all)")
    p.add_argument("--all", action="store_true", help="export every finished run found")
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--no-gallery", action="store_true", help="skip building the retrieval gallery")
    p.add_argument("--gallery-dir", help="image folder for the gallery (default: Fashion-MNIST test)")
    p.add_argument("--gallery-limit", type=int, help="use only the first N gallery images")
    p.add_argument("--no-int8", action="store_true",
                   help="skip the INT8 versions (export/int8.yaml; they are served only when "
                        "measured faster and as accurate)")
    args = p.parse_args(argv)
    if not args.all and not args.runs:
        p.error("name runs to export or pass --all")
    from export.pipeline import export_all

    signal.signal(signal.SIGTERM, _stop)  # as Ctrl-C: what was written so far is removed
    export_all(artifacts_folder(args.artifacts), args.runs or None,
               {"gallery": not args.no_gallery, "gallery_dir": args.gallery_dir,
                "gallery_limit": args.gallery_limit, "int8": not args.no_int8})
    return 0


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM (a build being stopped): stop the export as Ctrl-C does."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
