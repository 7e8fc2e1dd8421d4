"""Typed dataclasses from plain mappings (YAML, JSON): the one validation path of every config.

:func:`from_mapping` checks a (possibly partial, possibly nested) mapping against a dataclass's
annotations: unknown keys, wrong types (ints widen to float, no bool for numbers), NaN and
infinite numbers are refused with one line naming the key; missing keys come from ``base`` (or
the dataclass defaults). Range checks stay with each dataclass (``__post_init__`` or a validator).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from typing import Literal, Union

from cellinr.errors import ConfigError


def _convert(value, tp, key: str):
    """Check ``value`` against the type annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {tp}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {typing.get_args(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")  # a bug in this module


def _from_dict(cls, data, prefix: str, base, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} key {prefix or '<top>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        dot = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where} key {dot}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        current = getattr(base, f.name) if base is not None else None
        if f.name not in data:
            if base is not None:
                values[f.name] = copy.deepcopy(current)
            continue
        elif dataclasses.is_dataclass(tp):
            values[f.name] = _from_dict(tp, data[f.name], key, current if current is not None else tp(), where)
        else:
            values[f.name] = _convert(data[f.name], tp, f"{where} key {key}")
    return cls(**values)


def from_mapping(cls, data, *, base=None, where: str = "config"):
    """An instance of the dataclass ``cls`` from ``data``; missing keys from ``base`` or the defaults.

    Raises :class:`cellinr.errors.ConfigError` (``"<where> key a.b: ..."``) for a non-mapping, an
    unknown key or a value of the wrong type.
    """
    return _from_dict(cls, data, "", base, where)
