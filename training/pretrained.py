"""Start a model's backbone (or any submodule) from a local pretrained weights file.

Section ``pretrained`` of every run config: ``weights`` (a file, null = random init) and
``module`` (the dotted name of the submodule to load, e.g. ``backbone``; ``""`` = the whole
model). Nothing is downloaded: the user brings the file.

Files read (:func:`read_state_dict`):

- a plain state dict (``torch.save(model.state_dict(), f)``, timm's and torchvision's
  released ``.pth`` weights);
- a timm training checkpoint (``state_dict`` / ``state_dict_ema`` / ``model`` inside,
  keys possibly prefixed ``module.`` by DDP);
- a RepLens ``checkpoint.pt`` (its ``model``: e.g. a DCL-pretrained backbone for
  ABC-Norm);
- a ``.safetensors`` file.

Pickled files are read with ``torch.load(weights_only=True)`` (no code runs; argparse
namespaces, as in timm's checkpoints, are allowed).

Key matching (:func:`match_state_dict`): the file's keys may carry a prefix the model's do
not (``module.``, ``backbone.``, ``encoder.backbone.``, ``model.``): the prefix under
which most of the submodule's keys are found is used. Every tensor of the submodule must
then be in the file with the same shape; a missing or mismatched key is an error that
names it (:class:`PretrainedError`). Keys of the file that the submodule does not have (a
classifier ``fc``, a stage the model does not build) are listed and left out.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

_NESTED = ("state_dict_ema", "state_dict", "model", "module", "net")
_LIST_MAX = 12


class PretrainedError(ValueError):
    """A weights file that cannot start the model; the message names the keys."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: the file, the submodule, the prefix used, how many
    tensors it loaded and which keys of the file it left out."""

    path: str
    module: str
    prefix: str
    loaded: int
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        where = self.module or "the whole model"
        text = f"loaded {self.loaded} tensors from {self.path} into {where}"
        if self.prefix:
            text += f" (file keys under {self.prefix!r})"
        if self.unused:
            text += f"; left out {len(self.unused)} keys the model does not have: " \
                    + _names(self.unused)
        return text


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_MAX])
    return shown + (f", ... ({len(keys) - _LIST_MAX} more)" if len(keys) > _LIST_MAX else "")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring), keys as stored.

    Raises:
        FileNotFoundError: no such file.
        PretrainedError: not a weights file, or it holds no tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained.weights: {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
            raise PretrainedError(f"pretrained.weights: {path} is not a safetensors file "
                                  f"({exc})") from exc
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PretrainedError(
            f"pretrained.weights: {path} cannot be read as weights ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Give a state dict saved with "
            f"torch.save(model.state_dict(), file), a timm checkpoint or a .safetensors file"
        ) from exc
    return _tensors(obj, path)


def _tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED:  # a checkpoint with the weights inside
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor)
                                                  for v in inner.values()):
                return _tensors(inner, path)
        out = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if out:
            return out
    raise PretrainedError(f"pretrained.weights: {path} holds no tensors (expected a state "
                          f"dict or a checkpoint with 'state_dict' or 'model')")


def _prefixes(keys: list[str]) -> list[str]:
    """Every dotted prefix (with its trailing dot) of the file's keys, shortest first."""
    found = {""}
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts)):
            found.add(".".join(parts[:i]) + ".")
    return sorted(found, key=lambda p: (p.count("."), p))


def match_state_dict(target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor],
                     where: str = "the model") -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The file's tensors renamed to ``target``'s keys.

    Args:
        target: the submodule's state dict (names and shapes wanted).
        source: the file's tensors.
        where: the submodule's name, for messages.

    Returns:
        (state dict with exactly ``target``'s keys, the prefix used, the file keys left out).

    Raises:
        PretrainedError: keys of ``target`` missing from the file, or shapes that differ;
            the message names them (and the shapes).
    """
    src_keys = list(source)
    best, best_hits = "", -1
    for prefix in _prefixes(src_keys):
        hits = sum(1 for k in target if prefix + k in source)
        if hits > best_hits:
            best, best_hits = prefix, hits
    missing = [k for k in target if best + k not in source]
    mismatched = [f"{k}: model {tuple(v.shape)}, file {tuple(source[best + k].shape)}"
                  for k, v in target.items()
                  if best + k in source and tuple(source[best + k].shape) != tuple(v.shape)]
    if missing or mismatched:
        lines = [f"pretrained weights do not fit {where}"
                 + (f" (file keys read under {best!r})" if best else "") + ":"]
        if missing:
            lines.append(f"  {len(missing)} of its {len(target)} keys are missing from the "
                         f"file: {_names(missing)}")
        if mismatched:
            lines.append(f"  {len(mismatched)} keys have another shape: {_names(mismatched)}")
        lines.append("  (check model.* against the file's architecture, in_chans, the stem, "
                     "and pretrained.module)")
        raise PretrainedError("\n".join(lines))
    used = {best + k for k in target}
    unused = [k for k in src_keys if k not in used]
    return {k: source[best + k] for k in target}, best, unused


def load_pretrained(model: nn.Module, weights: str | Path, module: str = "") -> LoadReport:
    """Load ``weights`` into ``model``'s submodule ``module`` (``""``: the whole model).

    Raises:
        FileNotFoundError: no such file.
        PretrainedError: no such submodule, an unreadable file, or missing/mismatched keys.
    """
    try:
        target = model.get_submodule(module) if module else model
    except AttributeError as exc:
        names = ", ".join(n for n, _ in model.named_children())
        raise PretrainedError(f"pretrained.module: the model has no submodule {module!r} "
                              f"(its top-level modules: {names}; '' = the whole model)") from exc
    state, prefix, unused = match_state_dict(target.state_dict(), read_state_dict(weights),
                                             where=repr(module) if module else "the model")
    target.load_state_dict(state, strict=True)
    return LoadReport(path=str(weights), module=module, prefix=prefix, loaded=len(state),
                      unused=unused)
