"""``python -m training METHOD [--config FILE] [--set key=value ...] [--resume]``.

Under ``torchrun --nproc_per_node N -m training METHOD ...`` the same command trains with
DistributedDataParallel (gloo on CPU, NCCL on GPU); ``train.batch_size`` is the global batch.
"""
from __future__ import annotations

import argparse
import json
import sys

from training.config import apply_overrides, default_config_path, load_config
from training.methods import DESCRIPTIONS, METHODS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    epilog = "methods and their default configs:\n" + "\n".join(
        f"  {m:<8} {DESCRIPTIONS[m]}\n           config: training/configs/{m}.yaml"
        for m in METHODS if m != "toy")
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=[m for m in METHODS], metavar="METHOD",
                   help="one of: " + ", ".join(m for m in METHODS if m != "toy"))
    p.add_argument("--config", help="YAML config (default: training/configs/METHOD.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--data", help="data folder (sets data.root), e.g. a Seq-DeepFake folder")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from training.engine import Trainer
    from training.methods import build_method

    try:
        cfg = load_config(args.config or default_config_path(args.method))
        overrides = list(args.overrides)
        if args.data:
            overrides.append(f"data.root={args.data}")
        cfg = apply_overrides(cfg, overrides)
        if args.artifacts:  # methods that make data (generated faces) put it there too
            cfg.setdefault("run", {})["artifacts"] = args.artifacts
        method = build_method(args.method, cfg)
        trainer = Trainer(args.method, method, cfg, artifacts=args.artifacts,
                          progress=not args.no_progress)
        summary = trainer.fit(resume=args.resume)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from training.distributed import is_main
    if is_main():
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
