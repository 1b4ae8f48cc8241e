"""Mixed precision and memory format of the training forward pass.

``train.amp`` picks the autocast dtype (:func:`autocast_dtype`):

- ``fp32``: float32 everywhere, no autocast;
- ``auto``: on CUDA bfloat16 where the GPU supports it, else float16 (with a gradient
  scaler); on the CPU float32, so the CPU runs are plain float32 (bfloat16 changes
  their numbers, and it is only fast on CPUs with bfloat16 instructions: on this machine's
  AVX512-BF16 CPU it trained ResNet-18 at 224 px about twice as fast,
  ``reports/train_speed.md``; set ``native`` or ``bf16`` to use it);
- ``native``: bfloat16 wherever the device computes it natively - a CUDA GPU with bfloat16,
  or a CPU with AVX512-BF16 or AMX instructions (:func:`cpu_has_bf16`) - float16 on an older
  GPU, float32 on any other CPU (where bfloat16 is emulated and slower than float32). The
  default build's conv-heavy runs (``seqfake``, ``dcl``) use it: on this machine's
  AVX512-BF16 CPU it trains them 1.4-1.5x faster with their headline metrics inside a point
  (docs/app.md); ``train.amp=fp32`` reproduces their float32 runs exactly;
- ``bf16`` / ``fp16``: that dtype on any device (``fp16`` always with a gradient scaler).

``train.channels_last`` stores the model's 4-D weights in NHWC order and hands its 4-D
image inputs over in that order (faster convolutions on GPUs with tensor cores and with
oneDNN on recent CPUs).

:class:`TrainForward` is what a method's ``loss`` receives as ``model`` when either option
is on: it runs the forward pass under autocast, with channels-last inputs, and returns the
outputs as float32, so every loss is computed in float32 outside autocast (CUDA autocast
refuses ``binary_cross_entropy`` on half tensors; cumulative sums and ``exp`` of
similarities lose too much in bfloat16). What the forward itself computes runs at the
autocast dtype (e.g. seqfake's token similarities, made in its forward, are bfloat16 before
the cast). Weights, gradients and optimiser state stay float32.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

AMP_MODES = ("fp32", "auto", "native", "bf16", "fp16")
"""(Not ``off``: YAML reads an unquoted ``off`` as false.)"""


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` = ``mode`` on ``device``; None = float32.

    Raises:
        ValueError: an unknown mode, or a mode the device cannot run.
    """
    if mode not in AMP_MODES:
        raise ValueError(f"train.amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "fp32":
        return None
    if mode in ("auto", "native"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if mode == "native" and device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        return None
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"train.amp={mode} is not supported on device {device}")
    return dtype


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), the case in
    which oneDNN's bfloat16 convolutions and matmuls are faster than float32 ones."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def make_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 autocast (its small range underflows gradients);
    None for float32 and bfloat16 (bfloat16 has float32's range)."""
    if dtype is not torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def to_float32(out: Any) -> Any:
    """``out`` with every half/bfloat16 tensor cast to float32 (in dicts, lists, tuples)."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out
    if isinstance(out, dict):
        return {k: to_float32(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        items = [to_float32(v) for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    return out


def _channels_last(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
        return x.contiguous(memory_format=torch.channels_last)
    return x


class TrainForward:
    """The model as a method's ``loss`` sees it with ``train.amp`` / ``train.channels_last``.

    Calling it runs ``net(*args, **kwargs)`` under autocast (when ``dtype`` is set) with 4-D
    floating inputs in channels-last order (when ``channels_last``) and returns the outputs
    with half tensors cast to float32. Other attributes are those of the raw model;
    ``module`` is the raw model (as for DDP).

    Args:
        net: what to call: the model, or the DDP wrapper of it.
        raw: the model itself (``net.module`` under DDP).
        device: the device the model is on.
        dtype: autocast dtype (None: no autocast).
        channels_last: convert 4-D image inputs to channels-last.

    Example:
        >>> fwd = TrainForward(model, model, torch.device("cpu"), torch.bfloat16, False)
        >>> logits = fwd(x)          # x (B, C, H, W) -> logits (B, K), float32
    """

    def __init__(self, net: nn.Module, raw: nn.Module, device: torch.device,
                 dtype: torch.dtype | None, channels_last: bool) -> None:
        self.net, self.raw, self.dtype, self.channels_last = net, raw, dtype, channels_last
        self.device_type = device.type

    @property
    def module(self) -> nn.Module:
        return self.raw

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last:
            args = tuple(_channels_last(a) for a in args)
            kwargs = {k: _channels_last(v) for k, v in kwargs.items()}
        if self.dtype is None:
            return self.net(*args, **kwargs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(*args, **kwargs)
        return to_float32(out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)
