"""methods.schema.validate on pydantic: the first mistake in reading order, told in one line
that names the key, its type or range, and for an unknown key the closest valid one."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from methods.schema import ConfigError, positive, probability, validate


@dataclass
class Inner:
    size: tuple[int, int]
    rate: float = probability()
    steps: int | None = positive()


@dataclass
class Outer:
    name: str
    inner: Inner
    extra: Inner | None
    flags: list[bool]


GOOD = {"name": "a", "inner": {"size": [2, 3], "rate": 1, "steps": None}, "extra": None,
        "flags": [True]}


def _msg(**changes) -> str:
    data = {**GOOD, **changes}
    with pytest.raises(ConfigError) as info:
        validate(Outer, data)
    return str(info.value)


def test_a_valid_config_comes_back_converted_with_yaml_lists():
    out = validate(Outer, GOOD)
    assert out["inner"] == {"size": [2, 3], "rate": 1.0, "steps": None}
    assert isinstance(out["inner"]["rate"], float)


@pytest.mark.parametrize("changes, message", [
    ({"nme": "a"}, "unknown config key 'nme' (did you mean 'name'?); valid keys: extra, flags, "
                   "inner, name"),
    ({"inner": {"size": [2, 3], "rate": 1, "steps": None, "stpes": 1}},
     "unknown config key 'inner.stpes' (did you mean 'steps'?); valid keys in inner: rate, "
     "size, steps"),
    ({"inner": {"size": [2, 3], "steps": None}}, "config key 'inner.rate' is missing"),
    ({"inner": {"size": [2, 3], "rate": 1.5, "steps": None}}, "inner.rate must be <= 1, got 1.5"),
    ({"inner": {"size": [2, 3], "rate": 1, "steps": 0}}, "inner.steps must be >= 1, got 0"),
    ({"inner": {"size": [2, 3], "rate": 1, "steps": 0.5}},
     "inner.steps must be an integer or null, got 0.5"),
    ({"inner": {"size": [2], "rate": 1, "steps": None}}, "inner.size must have 2 items, got [2]"),
    ({"inner": {"size": [2, 3.5], "rate": 1, "steps": None}},
     "inner.size[1] must be an integer, got 3.5"),
    ({"inner": {"size": [2, 3], "rate": True, "steps": None}},
     "inner.rate must be a number, got True"),
    ({"inner": 5}, "inner must be a section (a mapping), got 5"),
    ({"extra": {"size": [2, 3]}}, "extra must be a section or null, got {'size': [2, 3]}"),
    ({"flags": [1]}, "flags[0] must be true or false, got 1"),
    ({"name": 3, "nme": 1}, "unknown config key 'nme'"),          # an unknown key comes first
])
def test_the_message_names_the_key_and_what_it_must_be(changes, message):
    assert _msg(**changes).startswith(message)
