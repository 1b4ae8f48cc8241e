"""The serving limits in one object: queue, concurrency, time limit, upload, bag and video
sizes, and the bound of the answer-file cache.

Defaults are written once, in ``app/serve.yaml``. Each key is overridden by an environment
variable ``REPLENS_<KEY>`` (``REPLENS_QUEUE_SIZE=8``) and, for ``python -m app``, by a flag
(``--queue-size 8``); a flag wins over the variable, the variable over the file. Values are
checked by the same strict validator as the training configs (:func:`methods.schema.validate`):
an unknown key, a non-number or a value out of range is refused with the key in the message.

The app and the CLI read the settings in force through :func:`current`; ``python -m app``
sets them once at start (:func:`configure`). torch-free.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from methods.schema import ConfigError, positive, validate

SETTINGS_FILE = Path(__file__).with_name("serve.yaml")
ENV_PREFIX = "REPLENS_"


@dataclass(frozen=True)
class ServeSettings:
    """Limits of a serving process (documented key by key in ``app/serve.yaml``)."""
    concurrency: int = positive()
    queue_size: int = positive()
    request_timeout_s: float = positive()
    max_upload_mb: float = positive()
    max_pixels: int = positive()
    max_side: int = positive()
    min_side: int = positive()
    max_batch_files: int = positive()
    max_bag: int = positive()
    max_query_chars: int = positive()
    max_video_seconds: float = positive()
    max_video_frames: int = positive()
    answer_cache_answers: int = positive()
    answer_cache_age_s: float = positive()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def _fields() -> dict[str, Any]:
    return typing.get_type_hints(ServeSettings)


def _from_text(key: str, text: str, tp: Any) -> Any:
    """An environment variable's text as the key's type (validate() checks the range)."""
    try:
        return int(text) if tp is int else float(text)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{key.upper()}={text!r}: {key} must be "
                          f"{'an integer' if tp is int else 'a number'}") from None


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> ServeSettings:
    """``serve.yaml``, then ``REPLENS_<KEY>`` variables, then ``overrides`` (flags; None
    values ignored), validated.

    Raises:
        ConfigError: a bad value (named by its key or variable) or an unknown key.
    """
    data = yaml.safe_load(SETTINGS_FILE.read_text()) or {}
    env = os.environ if environ is None else environ
    for key, tp in _fields().items():
        text = env.get(ENV_PREFIX + key.upper())
        if text not in (None, ""):
            data[key] = _from_text(key, text, tp)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    s = ServeSettings(**validate(ServeSettings, data))
    if s.min_side > s.max_side:
        raise ConfigError(f"min_side ({s.min_side}) must not exceed max_side ({s.max_side})")
    return s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (``--queue-size``); its default (None) leaves the key to the
    environment and ``serve.yaml``."""
    defaults = yaml.safe_load(SETTINGS_FILE.read_text()) or {}
    group = parser.add_argument_group("serving limits (defaults: app/serve.yaml; "
                                      "environment: REPLENS_<KEY>)")
    for key, tp in _fields().items():
        group.add_argument("--" + key.replace("_", "-"), type=tp, default=None, dest=key,
                           metavar="N", help=f"(default {defaults.get(key)}; "
                                             f"{ENV_PREFIX}{key.upper()})")


def from_args(args: argparse.Namespace) -> ServeSettings:
    """The settings with the flags of :func:`add_arguments` applied."""
    return load_settings({k: getattr(args, k, None) for k in _fields()})


_CURRENT: list[ServeSettings] = []


def configure(settings: ServeSettings) -> ServeSettings:
    """Make ``settings`` the ones in force for this process."""
    _CURRENT[:] = [settings]
    return settings


def current() -> ServeSettings:
    """The settings in force: those given to :func:`configure`, else ``serve.yaml`` with
    the environment applied (read once)."""
    if not _CURRENT:
        _CURRENT.append(load_settings())
    return _CURRENT[0]


def as_dict(settings: ServeSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
