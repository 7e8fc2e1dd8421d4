"""Compute-device selection: explicit, validated, logged."""

from __future__ import annotations

import logging

from cellinr.errors import DeviceError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 avx512_bf16 or AMX; bf16 is emulated, and slow, elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device) -> str:
    """The training precision ``auto`` stands for on ``device`` (others are returned as they are)."""
    if precision != "auto":
        return precision
    return "bf16-hidden" if getattr(device, "type", str(device)) == "cpu" and cpu_has_native_bf16() else "fp32"


def resolve_device(name: str = "auto"):
    """Return a ``torch.device`` for ``name`` in {"auto", "cpu", "cuda", "cuda:N", "mps"}.

    ``auto`` picks CUDA, then MPS, then CPU. An explicitly requested device that is not
    available raises :class:`DeviceError`.
    """
    import torch

    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        log.info("device: %s", device)
        return device
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine")
        return torch.device(name)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise DeviceError("--device mps: MPS is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"--device {name}: unknown device; choose one of {', '.join(DEVICES)}")


#: ``train.compile: auto`` compiles runs of at least this many optimiser steps (compiling costs about 30 s)
COMPILE_MIN_STEPS = 500


def resolve_compile(mode: str, device, steps: int) -> bool:
    """Whether ``train.compile`` = ``mode`` compiles a run of ``steps`` optimiser steps on ``device``."""
    if mode != "auto":
        return mode == "on"
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return steps >= COMPILE_MIN_STEPS
    if kind != "cpu":  # MPS: inductor support is partial
        return False
    import shutil

    # inductor's CPU backend builds C++ kernels
    return steps >= COMPILE_MIN_STEPS and any(shutil.which(c) for c in ("g++", "c++", "clang++"))
