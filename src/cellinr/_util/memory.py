"""Memory checks before allocations that scale with a user-given size."""

from __future__ import annotations

import os

from cellinr.errors import ParameterError


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None when the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: int, max_memory_gb: float | None, what: str, *, flag: str = "--max-memory-gb") -> None:
    """Refuse ``need`` bytes above ``max_memory_gb`` GiB (default: 80 % of physical memory).

    Raises :class:`ParameterError` naming ``what``, the estimate and the limit.
    """
    if max_memory_gb is not None:
        if not float(max_memory_gb) > 0:
            raise ParameterError(f"{flag} {max_memory_gb}: must be positive")
        limit = float(max_memory_gb) * 2**30
    else:
        total = physical_memory()
        if total is None:
            return
        limit = 0.8 * total
    if need > limit:
        raise ParameterError(
            f"{what} needs about {need / 2**30:.1f} GiB of memory, more than the allowed "
            f"{limit / 2**30:.1f} GiB (use a smaller size or raise {flag})"
        )
