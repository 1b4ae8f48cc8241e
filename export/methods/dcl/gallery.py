"""``python -m export.methods.dcl.gallery``: (re)build the Retrieval tab's gallery alone.

    python -m export.methods.dcl.gallery --folder PHOTOS/ [--limit N]
        [--index auto|exact|ivf|hnsw]
    python -m export.methods.dcl.gallery            # Fashion-MNIST test (the default gallery)
    python -m export.methods.dcl.gallery --model mine --folder PHOTOS/   # galleries/mine
    python -m export.methods.dcl.gallery --folder PHOTOS/ --engine ray [--address auto]
        [--workers N]

Embeds the images with the exported DCL encoder (``<artifacts>/onnx/dcl.onnx``) into a
fresh ``<artifacts>/gallery`` folder (``gallery.2`` while the old one is served), then switches
the manifest to it in one rename and removes the old one. A folder is read in shards with a progress bar; interrupted (Ctrl-C),
the same command continues after the last complete shard. The images stay where they are
(the gallery keeps relative paths and makes thumbnails on first query). The index is
exact below ``index.exact_below`` images and approximate above (``runtime/gallery_index.yaml``,
justified in reports/index_bench.md). ``python -m export dcl --gallery-dir PHOTOS/`` does
the same after exporting the encoder. ``--engine ray`` embeds the shards in parallel on a Ray
cluster (:mod:`app.batch_ray`, docs/scale.md); the gallery and its index are the same.
"""
from __future__ import annotations

import argparse
import sys

from runtime.artifacts import artifacts_dir
from runtime.cli import UserError, run_main


def _main(argv: list[str] | None) -> int:
    from runtime.ann import KINDS
    from runtime.manifest import read_manifest

    p = argparse.ArgumentParser(prog="python -m export.methods.dcl.gallery", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", help="image folder (sub-folders = labels); default: Fashion-MNIST test")
    p.add_argument("--limit", type=int, help="use only the first N images (sorted paths)")
    p.add_argument("--index", default="auto", choices=("auto", *KINDS),
                   help="index kind (default: chosen by gallery size)")
    p.add_argument("--model", help="the DCL encoder (a run name of the manifest; default: the "
                                   "default encoder, dcl)")
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    from app.batch_ray import add_engine_args, wants_ray

    add_engine_args(p, "the shards are embedded")
    args = p.parse_args(argv)
    from export.methods.dcl.assets import SERVED, build_gallery

    artifacts = artifacts_dir(args.artifacts)
    run = args.model or SERVED
    if run not in read_manifest(artifacts)["models"]:
        raise UserError(f"no exported '{run}' encoder in {artifacts}: run "
                        f"`python -m training dcl --set run.name={run}` and "
                        f"`python -m export {run}` first")
    shards = None
    if wants_ray(args):
        if not args.folder:
            raise UserError("--engine ray builds a gallery of an image folder: add --folder DIR")
        from app.batch_ray import gallery_shards

        shards = gallery_shards(args.address, args.workers)
    build_gallery(artifacts, args.folder, limit=args.limit, index_kind=args.index, run=run,
                  shards=shards)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
