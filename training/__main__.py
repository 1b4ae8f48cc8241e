"""``python -m training METHOD [--config FILE] [--set key=value ...] [--resume]``.

Under ``torchrun --nproc_per_node N -m training METHOD ...`` the same command trains with
DistributedDataParallel (gloo on CPU, NCCL on GPU); ``train.batch_size`` is the global batch.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file, not with python -m
    print("error: training/__main__.py is part of the RepLens package: run `python -m "
          "training ...` from the repository folder (or `replens train ...` once installed "
          "by scripts/setup.sh)", file=sys.stderr)
    raise SystemExit(2)

from methods import all_methods  # noqa: E402 - after the guard above
from runtime.cli import Parser, artifacts_folder, run_main  # noqa: E402
from training.config import resolve_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    shown = [d for d in all_methods() if d.tab is not None]
    epilog = "methods and their default configs:\n" + "\n".join(
        f"  {d.name:<8} {d.description}\n           config: training/configs/{d.config_file}"
        + "".join(f"\n           variant {v.name}: {' '.join('--set ' + shlex.quote(o) for o in v.overrides)}"
                  for v in d.variants.values() if v.overrides)
        for d in shown)
    p = Parser(prog="python -m training", description=__doc__,
               epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=[d.name for d in all_methods()], metavar="METHOD",
                   help="one of: " + ", ".join(d.name for d in shown))
    p.add_argument("--config", help="YAML file merged over training/configs/METHOD.yaml "
                                    "(it may hold only the keys it changes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--data", help="data folder (sets data.root), e.g. a Seq-DeepFake folder")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    return run_main(_run, argv)


def _run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    from training.engine import Trainer
    from training.methods import build_method

    overrides = list(args.overrides)
    if args.data:
        if not Path(args.data).expanduser().exists():
            raise FileNotFoundError(f"--data {args.data}: no such file or folder")
        overrides.append(f"data.root={args.data}")
    if args.artifacts:  # methods that make data (generated faces) put it there too
        artifacts_folder(args.artifacts)  # a file instead of a folder is refused
        overrides.append(f"run.artifacts={args.artifacts}")
    cfg = resolve_config(args.method, args.config, overrides)
    method = build_method(args.method, cfg)
    trainer = Trainer(args.method, method, cfg, artifacts=args.artifacts,
                      progress=not args.no_progress)
    summary = trainer.fit(resume=args.resume)
    from training.distributed import is_main
    if is_main():
        print(json.dumps(summary, indent=2))
        if summary.get("at_chance"):
            from training.verdict import warning
            print(warning(summary["learned"]), file=sys.stderr)
    if summary.get("interrupted"):  # stopped by a signal: resumable with --resume
        print(f"[train] interrupted at step {summary['steps']}; continue with --resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
