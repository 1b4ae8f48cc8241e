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
from dataclasses import dataclass, field
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
    allowed_hosts: list[str] = field()
    allowed_origins: list[str] = field()
    login_max_failures: int = positive()
    login_window_s: float = positive()
    private_reports: bool = field()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def _fields() -> dict[str, Any]:
    return typing.get_type_hints(ServeSettings)


def _from_text(key: str, text: str, tp: Any) -> Any:
    """An environment variable's or flag's text as the key's type (validate() checks the
    range): a list is comma-separated, a yes/no is true/false (or 1/0, yes/no)."""
    if typing.get_origin(tp) is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    if tp is bool:
        word = text.strip().lower()
        if word in ("true", "1", "yes", "on"):
            return True
        if word in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{ENV_PREFIX}{key.upper()}={text!r}: {key} must be true or false")
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
    hints = _fields()
    data.update({k: _from_text(k, v, hints[k]) if isinstance(v, str) and k in hints else v
                 for k, v in (overrides or {}).items() if v is not None})
    checked = validate(ServeSettings, data)
    s = ServeSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in checked.items()})
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
        simple = tp in (int, float)
        group.add_argument("--" + key.replace("_", "-"), default=None, dest=key,
                           type=tp if simple else str,
                           metavar="N" if simple else "A,B" if tp is not bool else "true|false",
                           help=f"(default {defaults.get(key)}; {ENV_PREFIX}{key.upper()})")


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


def user_file_mode(settings: ServeSettings | None = None) -> int | None:
    """Permissions of the files the CLI writes for the user (``--report``, ``--out``,
    ``--cam-out``): 0600 with ``private_reports``, else None (0644 less the umask)."""
    return 0o600 if (settings or current()).private_reports else None


def as_dict(settings: ServeSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def limits(settings: ServeSettings) -> dict[str, float]:
    """The numeric limits (what ``/status`` and the Models tab report as ``limits``)."""
    return {k: v for k, v in as_dict(settings).items() if type(v) in (int, float)}
