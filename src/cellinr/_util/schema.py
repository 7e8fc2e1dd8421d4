"""Structural checks of the files the tool reads back, at load: one line naming the file and the key.

Readers (:func:`read_text`, :func:`read_json`, :func:`read_yaml`, :func:`read_csv_rows`) refuse
unreadable files, non-UTF-8 bytes, syntax errors and the non-standard JSON constants ``NaN`` and
``Infinity``. :func:`check` matches a loaded value against a small schema:

- ``str``, ``int`` (not bool), ``float`` (ints widen; finite only), ``bool``, ``Any``;
- ``Opt(T)``: T or null; ``OneOf(T1, T2, ...)``; ``Choice("a", "b")``;
- ``Num(lo=, hi=, integer=, lo_open=)``: a finite number in a range;
- ``ListOf(T, length=, min_length=)``;
- a dict ``{"key": T, "?optional": T}``: a JSON object with these keys (other keys allowed).

Errors are ``error(f"{file}: key a.b[2].c: expected ..., got ...")`` with the caller's error class
(a :class:`cellinr.errors.CellinrError`). Configs are checked by
:mod:`cellinr._util.typed_config`, not here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellinr.errors import InputError

_MAX_SHOWN = 60


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


@dataclass(frozen=True)
class Opt:
    """``inner`` or null."""

    inner: Any


@dataclass(frozen=True)
class OneOf:
    """The first of ``options`` that matches."""

    options: tuple

    def __init__(self, *options):
        object.__setattr__(self, "options", options)


@dataclass(frozen=True)
class Choice:
    """One of the given values."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", values)


@dataclass(frozen=True)
class Num:
    """A finite number (integer with ``integer``) in [lo, hi] (``lo_open``: lo excluded)."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    lo_open: bool = False


@dataclass(frozen=True)
class ListOf:
    """A list of ``item`` (of ``length`` items, or at least ``min_length``)."""

    item: Any
    length: int | None = None
    min_length: int = 0


POSITIVE_INT = Num(lo=1, integer=True)
NON_NEGATIVE_INT = Num(lo=0, integer=True)
POSITIVE = Num(lo=0, lo_open=True)


def _describe(schema) -> str:
    if schema is str:
        return "a string"
    if schema is int:
        return "an integer"
    if schema is float:
        return "a finite number"
    if schema is bool:
        return "true or false"
    if isinstance(schema, Opt):
        return f"{_describe(schema.inner)} or null"
    if isinstance(schema, OneOf):
        return " or ".join(_describe(o) for o in schema.options)
    if isinstance(schema, Choice):
        return "one of " + ", ".join(repr(v) for v in schema.values)
    if isinstance(schema, Num):
        kind = "an integer" if schema.integer else "a finite number"
        if schema.lo is not None and schema.hi is not None:
            return f"{kind} in {'(' if schema.lo_open else '['}{schema.lo:g}, {schema.hi:g}]"
        if schema.lo is not None:
            return f"{kind} {'>' if schema.lo_open else '>='} {schema.lo:g}"
        if schema.hi is not None:
            return f"{kind} <= {schema.hi:g}"
        return kind
    if isinstance(schema, ListOf):
        n = f"{schema.length} " if schema.length is not None else ""
        return f"a list of {n}items"
    if isinstance(schema, dict):
        return "an object"
    return str(schema)


class _Mismatch(Exception):
    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(value, schema, key: str):
    if schema is Any:
        return value
    if isinstance(schema, Opt):
        return None if value is None else _check(value, schema.inner, key)
    if isinstance(schema, OneOf):
        first = None
        for option in schema.options:
            try:
                return _check(value, option, key)
            except _Mismatch as exc:
                first = first or exc
                if exc.key != key:  # matched the shape, failed deeper: that is the error to report
                    raise
        raise _Mismatch(key, f"expected {_describe(schema)}, got {_show(value)}")
    if isinstance(schema, Choice):
        if value not in schema.values:
            raise _Mismatch(key, f"expected {_describe(schema)}, got {_show(value)}")
        return value
    if schema is str:
        if not isinstance(value, str):
            raise _Mismatch(key, f"expected a string, got {_show(value)}")
        return value
    if schema is bool:
        if not isinstance(value, bool):
            raise _Mismatch(key, f"expected true or false, got {_show(value)}")
        return value
    if schema is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Mismatch(key, f"expected an integer, got {_show(value)}")
        return value
    if schema is float:
        if not _is_number(value) or not math.isfinite(value):
            raise _Mismatch(key, f"expected a finite number, got {_show(value)}")
        return value
    if isinstance(schema, Num):
        ok = _is_number(value) and math.isfinite(value) and (not schema.integer or isinstance(value, int)
                                                             or float(value).is_integer())
        if ok and schema.lo is not None:
            ok = value > schema.lo if schema.lo_open else value >= schema.lo
        if ok and schema.hi is not None:
            ok = value <= schema.hi
        if not ok:
            raise _Mismatch(key, f"expected {_describe(schema)}, got {_show(value)}")
        return int(value) if schema.integer else value
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            raise _Mismatch(key, f"expected a list, got {_show(value)}")
        if schema.length is not None and len(value) != schema.length:
            raise _Mismatch(key, f"expected {schema.length} items, got {len(value)}")
        if len(value) < schema.min_length:
            raise _Mismatch(key, f"expected at least {schema.min_length} items, got {len(value)}")
        return [_check(v, schema.item, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise _Mismatch(key, f"expected an object, got {_show(value)}")
        for name, sub in schema.items():
            optional = name.startswith("?")
            name = name.lstrip("?")
            inner = f"{key}.{name}" if key else name
            if name not in value:
                if optional:
                    continue
                raise _Mismatch(inner, "missing")
            _check(value[name], sub, inner)
        return value
    raise TypeError(f"unsupported schema {schema!r}")  # a bug in the caller


def check(data, schema, where: str | os.PathLike, *, error: type = InputError):
    """Check ``data`` against ``schema``; return it. Raises ``error("<where>: key k: ...")``."""
    try:
        return _check(data, schema, "")
    except _Mismatch as exc:
        if not exc.key:
            raise error(f"{where}: {exc.message.replace(', got', ' at the top level, got', 1)}") from None
        if exc.message == "missing":
            raise error(f"{where}: missing key {exc.key}") from None
        raise error(f"{where}: key {exc.key}: {exc.message}") from None


# ----------------------------------------------------------------------------------------------
# readers


def read_bytes(path: str | os.PathLike, *, error: type = InputError, what: str = "file") -> bytes:
    """The bytes of ``path``; a missing file, a folder or an OS error is one line."""
    from cellinr._util.outputs import os_error_cause

    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a folder; expected a {what}")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({os_error_cause(exc, path)})") from None


def read_text(path: str | os.PathLike, *, error: type = InputError, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark is dropped); other bytes are an error."""
    data = read_bytes(path, error=error, what=what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    if "\x00" in text:
        raise error(f"{path}: not a text file (contains NUL bytes)")
    return text[1:] if text.startswith("\ufeff") else text


def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str, where: str | os.PathLike, *, error: type = InputError):
    """Parse strict JSON (no NaN / Infinity); errors name ``where``, the line and the column."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # NaN / Infinity, or an integer with too many digits
        raise error(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{where}: not valid JSON (nested too deeply)") from None


def read_json(path: str | os.PathLike, schema=Any, *, error: type = InputError, what: str = "JSON file"):
    """Read a JSON file and check it against ``schema`` (see :func:`check`)."""
    data = parse_json(read_text(path, error=error, what=what), path, error=error)
    return check(data, schema, path, error=error) if schema is not Any else data


def read_yaml(path: str | os.PathLike, *, error: type = InputError, what: str = "YAML file"):
    """Read a YAML file with ``yaml.safe_load`` (no code runs); errors name the file and the line."""
    return parse_yaml(read_text(path, error=error, what=what), path, error=error)


def parse_yaml(text: str, where: str | os.PathLike, *, error: type = InputError):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{where}: not valid YAML ({problem}{at})") from None
    except RecursionError:
        raise error(f"{where}: not valid YAML (nested too deeply)") from None


def read_csv_rows(path: str | os.PathLike, *, columns: dict | None = None, error: type = InputError,
                  what: str = "CSV table") -> list[dict]:
    """Rows of a CSV file with a header; ``columns`` maps required column names to converters.

    Every row must have as many fields as the header; a converted value that fails (or is not
    finite, for ``float``) is an error naming the file, the line and the column.
    """
    import csv
    import io

    text = read_text(path, error=error, what=what)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames
        if not header:
            raise error(f"{path}: empty {what} (no header line)")
        missing = [c for c in (columns or {}) if c not in header]
        if missing:
            raise error(f"{path}: not a {what}: missing column {missing[0]}")
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row or any(v is None for v in row.values()):
                raise error(f"{path}: line {line}: expected {len(header)} fields")
            for name, convert in (columns or {}).items():
                try:
                    value = convert(row[name])
                    if isinstance(value, float) and convert is float and not math.isfinite(value):
                        raise ValueError
                except (TypeError, ValueError):
                    raise error(f"{path}: line {line}: column {name}: bad value {_show(row[name])}") from None
                row[name] = value
            rows.append(row)
    except csv.Error as exc:
        raise error(f"{path}: not a valid {what} ({exc})") from None
    return rows


def finite_array(array, where: str, *, error: type = InputError):
    """Refuse NaN or infinite values in ``array`` (a NumPy array or a torch tensor)."""
    import numpy as np

    values = array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise error(f"{where}: {bad} NaN or infinite values")
    return array
