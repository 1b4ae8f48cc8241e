"""MTCNN's three networks (facenet-pytorch's P-Net, R-Net, O-Net, weights from its wheel)
to ONNX, so the app detects faces without torch (:mod:`runtime.mtcnn` runs the cascade).

    python -m export.mtcnn [--artifacts DIR] [--force]

Writes ``<artifacts>/detector/mtcnn_{pnet,rnet,onet}.onnx`` (each atomically, after
onnx.checker and a parity check against eager torch) and then the record
``<artifacts>/detector/mtcnn.json``: every file's sha256, the cascade's parameters read
from facenet-pytorch's ``MTCNN`` (minimum face size, thresholds, pyramid factor), the
package version and the exporter. Also run by ``python -m export`` (the seqfake method's
post-export hook); an up-to-date record is kept. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from export.onnx_export import export_module
from runtime import mtcnn as rt
from runtime.artifacts import artifacts_dir, write_json_atomic
from runtime.cli import run_main
from runtime.manifest import sha256_file

_PNET_AXES = {"image": {0: "batch", 2: "height", 3: "width"},
              "reg": {0: "batch", 2: "rows", 3: "cols"}, "prob": {0: "batch", 2: "rows", 3: "cols"}}


def _nets() -> tuple[Any, dict[str, torch.nn.Module]]:
    """facenet-pytorch's MTCNN (default parameters) and its three networks, eval mode."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device="cpu")
    return mtcnn, {"pnet": mtcnn.pnet.eval(), "rnet": mtcnn.rnet.eval(),
                   "onet": mtcnn.onet.eval()}


def _sample(*shape: int, seed: int = 0) -> torch.Tensor:
    """Inputs in MTCNN's normalised range, (x - 127.5) / 128 of uint8 pixels."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, shape, generator=g).float() - 127.5) * 0.0078125


def _export_net(name: str, net: torch.nn.Module, path: Path) -> dict[str, Any]:
    """One network to ``path``; returns export_module's record (exporter, opset, max diff)."""
    outputs = rt.OUTPUTS[name]
    if name == "pnet":  # fully convolutional: any image size
        return export_module(net, (_sample(1, 3, 61, 47),), path, ["image"], outputs,
                             _PNET_AXES, check_inputs=[(_sample(1, 3, 12, 12, seed=1),),
                                                       (_sample(1, 3, 130, 97, seed=2),)],
                             dynamo_first=False)
    side = rt.INPUT_SIDE[name]
    axes = {"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    return export_module(net, (_sample(4, 3, side, side),), path, ["image"], outputs, axes,
                         check_inputs=[(_sample(1, 3, side, side, seed=1),),
                                       (_sample(33, 3, side, side, seed=2),)],
                         dynamo_first=False)


def _is_current(artifacts: Path, version: str) -> bool:
    """True when the record exists, names this facenet-pytorch version, and every file
    matches its sha256."""
    try:
        record = rt.read_record(artifacts)
        rt.check_files(artifacts, record)
    except rt.DetectorUnavailableError:
        return False
    return record.get("source", {}).get("version") == version


def export_detector(artifacts: Path, force: bool = False) -> dict[str, Any]:
    """Export the three networks and write the record (skipped when it is up to date,
    unless ``force``).

    Returns:
        the record written (or the current one).
    """
    artifacts = Path(artifacts)
    version = metadata.version("facenet-pytorch")
    if not force and _is_current(artifacts, version):
        return rt.read_record(artifacts)
    t0 = time.time()
    mtcnn, nets = _nets()
    files: dict[str, Any] = {}
    for name, net in nets.items():
        path = artifacts / rt.DETECTOR_DIR / f"mtcnn_{name}.onnx"
        info = _export_net(name, net, path)
        files[name] = {"file": str(path.relative_to(artifacts)), "sha256": sha256_file(path),
                       "outputs": list(rt.OUTPUTS[name]), **info}
    record = {
        "format_version": rt.RECORD_FORMAT,
        "source": {"package": "facenet-pytorch", "version": version,
                   "weights": "facenet_pytorch/data/{pnet,rnet,onet}.pt (inside the wheel)"},
        "cascade": {"min_face_size": float(mtcnn.min_face_size),
                    "thresholds": [float(t) for t in mtcnn.thresholds],
                    "factor": float(mtcnn.factor)},
        "nets": files,
        "torch": torch.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(artifacts / rt.RECORD_FILE, record)
    worst = max(f["max_abs_diff"] for f in files.values())
    print(f"[export] MTCNN detector: 3 ONNX files in {artifacts / rt.DETECTOR_DIR} "
          f"(max |onnx - torch| {worst:.1e}) in {time.time() - t0:.1f} s", flush=True)
    return record


def after_export(artifacts: Path, runs: list[str], options: dict[str, Any]) -> None:
    """Post-export hook of the face method: the detector, when any of its runs was
    exported now (an export of other methods alone does not spend the time on it)."""
    if runs:
        export_detector(artifacts)


def main(argv: list[str] | None = None) -> int:
    """The command; a user's mistake exits 2 with one line (:mod:`runtime.cli`)."""
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.mtcnn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", help="artifacts folder (default: $REPLENS_ARTIFACTS or ./artifacts)")
    p.add_argument("--force", action="store_true", help="export even when the files are current")
    args = p.parse_args(argv)
    export_detector(artifacts_dir(args.artifacts), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
