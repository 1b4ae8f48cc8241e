"""``python -m export.published KIND FILE [options]``: a published checkpoint becomes a run.

Kinds (each with its own options, ``python -m export.published KIND --help``):

  seqfakeformer FILE.pt --task components|attributes [--state fixed|adaptive]
      SeqFakeFormer (Shao et al., ECCV 2022), best_model_fixed.pt / best_model_adaptive.pt
  sbi FILE.tar [--ff raw|c23]
      SBI (Shiohara & Yamasaki, CVPR 2022), FFraw.tar / FFc23.tar

The run is written to ``<artifacts>/runs/<name>/`` (the file's sha256, what the authors
trained it on and their reported metrics in ``published.json``); then ``python -m export
NAME`` (or ``bash scripts/run.sh``, which exports every finished run) serves it. Nothing is
downloaded: docs/published.md says where each file comes from and under which terms.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.cli import Parser, artifacts_folder, run_main


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    return run_main(_main, argv)


def _parser() -> Parser:
    """The command's parser: one sub-command per registered importer."""
    from export.published import IMPORTERS, importer

    p = Parser(prog="python -m export.published", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="kind", metavar="KIND", parser_class=Parser)
    for kind in sorted(IMPORTERS):
        imp = importer(kind)
        sp = sub.add_parser(kind, help=imp.help, description=imp.help)
        sp.add_argument("file", metavar="FILE", help=imp.file_help)
        sp.add_argument("--name", help="the run's name under <artifacts>/runs (default: per "
                                       "kind, e.g. seqfakeformer_components)")
        sp.add_argument("--artifacts",
                        help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
        imp.add_arguments(sp)
    return p


def _main(argv: list[str] | None) -> int:
    from export.published import IMPORTERS, importer, write_run
    from runtime.manifest import sha256_file

    p = _parser()
    args = p.parse_args(argv)
    if not args.kind:
        p.error(f"name a kind first: {', '.join(sorted(IMPORTERS))}")
    if args.name is not None and (not args.name or "/" in args.name or args.name.startswith(".")):
        p.error(f"--name {args.name!r} must be a plain folder name (no '/', not hidden)")
    path = Path(args.file).expanduser()
    imp = importer(args.kind)
    run = imp.read(path, args)
    name = args.name or run.default_name
    sha = sha256_file(path)
    run_dir = write_run(artifacts_folder(args.artifacts), name, run, path, sha)
    print(f"[import] {path.name} (sha256 {sha[:12]}) -> {run_dir}: {run.trained_on}; "
          f"export it with `python -m export {name}`", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
