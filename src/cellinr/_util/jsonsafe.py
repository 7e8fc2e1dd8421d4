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
