"""Checkpoint -> single-file ONNX, written atomically and checked against eager torch."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from runtime.artifacts import atomic_path

OPSET = 18


class ParityError(RuntimeError):
    """onnxruntime and eager torch disagree beyond tolerance."""


def _export_to(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path,
               input_names: Sequence[str], output_names: Sequence[str],
               dynamic_axes: dict[str, dict[int, str]], dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, inputs, str(path), dynamo=True, opset_version=OPSET,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dynamic_axes, external_data=False, verbose=False,
                              optimize=True)
        else:
            torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=OPSET,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dynamic_axes, do_constant_folding=True)


def ort_session(path: str | Path):
    """An onnxruntime session on the CPU provider (used by parity checks)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def export_module(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path,
                  input_names: Sequence[str], output_names: Sequence[str],
                  dynamic_axes: dict[str, dict[int, str]], check_inputs: Sequence[tuple] = (),
                  atol: float = 1e-4, dynamo_first: bool = True) -> dict[str, object]:
    """Export ``module`` (eval mode, tuple outputs) to ``path`` and check parity.

    The TorchDynamo exporter is tried first, TorchScript's second (the other way round
    with ``dynamo_first=False``: quicker for small plain networks). The file replaces
    ``path`` only after onnx.checker and the parity check (max |ort - torch| < ``atol``
    on ``inputs`` and on every tuple in ``check_inputs``, e.g. other batch sizes) pass.

    Returns:
        ``{"exporter": "dynamo"|"torchscript", "opset": 18, "max_abs_diff": float}``.
    """
    import onnx

    module = module.eval()
    path = Path(path)
    errors: list[str] = []
    for dynamo in ((True, False) if dynamo_first else (False, True)):
        try:
            with atomic_path(path) as tmp:  # replaces ``path`` only if the body succeeds
                try:
                    _export_to(module, inputs, tmp, input_names, output_names, dynamic_axes,
                               dynamo)
                    onnx.checker.check_model(str(tmp))
                    worst = max_abs_diff(module, tmp, input_names, output_names,
                                         [inputs, *check_inputs])
                    if worst >= atol:
                        raise ParityError(f"max |onnxruntime - torch| = {worst:.2e} >= {atol}")
                except Exception as exc:  # noqa: BLE001 - try the other exporter
                    errors.append(f"{'dynamo' if dynamo else 'torchscript'}: "
                                  f"{type(exc).__name__}: {str(exc)[:400]}")
                    raise _Retry from exc
        except _Retry:
            continue
        return {"exporter": "dynamo" if dynamo else "torchscript", "opset": OPSET,
                "max_abs_diff": worst}
    raise RuntimeError("ONNX export failed:\n  " + "\n  ".join(errors))


class _Retry(Exception):
    """Internal: abandon this attempt (atomic_path discards the temp file)."""


def max_abs_diff(module: nn.Module, onnx_path: str | Path, input_names: Sequence[str],
                 output_names: Sequence[str], input_sets: Sequence[tuple]) -> float:
    """Largest |onnxruntime - eager torch| over all outputs and input sets."""
    worst = 0.0
    session = ort_session(onnx_path)  # one session for every input set
    for ins in input_sets:
        with torch.no_grad():
            ref = module(*ins)
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        got = session.run(None, {n: t.numpy() for n, t in zip(input_names, ins)})
        for name, r, g in zip(output_names, ref, got):
            if tuple(r.shape) != tuple(g.shape):
                raise ParityError(f"{name}: onnx shape {tuple(g.shape)} != torch {tuple(r.shape)}")
            if r.numel():
                worst = max(worst, float(np.abs(r.float().numpy() - g).max()))
    return worst
