"""Error classes for user-facing problems.

Every error a user can cause (bad file, bad parameter, bad folder) raises a subclass of
:class:`CellinrError`; the CLI prints its message as one line and exits non-zero. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CellinrError(Exception):
    """Base class of all user-facing errors."""


class InputError(CellinrError, ValueError):
    """An input file or array is missing, unreadable or has the wrong content."""


class ParameterError(CellinrError, ValueError):
    """A parameter has an invalid value."""


class DatasetError(CellinrError, ValueError):
    """A prepared SDF data set is missing, incomplete or inconsistent."""


class RunError(CellinrError, ValueError):
    """A run (model) folder is missing, incomplete or incompatible."""


class OutputExistsError(CellinrError, FileExistsError):
    """An output exists already and ``overwrite`` was not given."""


class OutputError(CellinrError, OSError):
    """An output cannot be written: no space left, read-only file system, permission denied, ..."""


class DeviceError(CellinrError, RuntimeError):
    """A requested compute device is not available."""


class ConfigError(CellinrError, ValueError):
    """A configuration has unknown keys or values of the wrong type."""


class DependencyError(CellinrError, ImportError):
    """An optional package needed for the requested feature is not installed (the message has the install hint)."""
