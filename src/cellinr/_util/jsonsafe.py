"""JSON-safe values: NumPy scalars and arrays to Python, non-finite floats to null."""

from __future__ import annotations

import math


def json_safe(obj, *, digits: int | None = None):
    """A copy of ``obj`` that :func:`json.dumps` writes as strict JSON.

    dict keys become strings; tuples and NumPy arrays lists; NumPy integers and floats Python
    numbers; NaN and infinities ``None``; floats are rounded to ``digits`` decimals when given.
    """
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v, digits=digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, digits=digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), digits=digits)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            return None
        return round(x, digits) if digits is not None else x
    return obj


#: The keys every JSON file of the package starts with: its file type and schema version, and the tool version.
TYPE_KEY, SCHEMA_KEY, VERSION_KEY = "format", "format_version", "cellinr_version"
#: Keys that files written by cellinr 0.1 used instead (still read).
LEGACY_TYPE_KEYS, LEGACY_VERSION_KEYS = ("kind",), ("version", "tool_version")


def file_header(file_type: str, schema_version: int = 1) -> dict:
    """``{"format": file_type, "format_version": schema_version, "cellinr_version": <version>}``."""
    from cellinr import __version__

    return {TYPE_KEY: file_type, SCHEMA_KEY: int(schema_version), VERSION_KEY: __version__}


def file_type_of(record) -> str | None:
    """The file type a JSON record declares (``format``, or the 0.1 ``kind``), None when it declares none."""
    if not isinstance(record, dict):
        return None
    for key in (TYPE_KEY, *LEGACY_TYPE_KEYS):
        if isinstance(record.get(key), str):
            return record[key]
    return None


def tool_version_of(record) -> str:
    """The cellinr version that wrote a JSON record ("" when unknown)."""
    if isinstance(record, dict):
        for key in (VERSION_KEY, *LEGACY_VERSION_KEYS):
            if isinstance(record.get(key), str):
                return record[key]
    return ""
