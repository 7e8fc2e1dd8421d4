"""Progress bars: shown on a terminal, quiet when stderr is a pipe, off under ``cellinr --quiet``."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pty = pytest.importorskip("pty")

BAR = "100%|"


def _run(argv, *, terminal: bool) -> tuple[int, str]:
    """Exit code and stderr of ``python -m cellinr ARGV``, stderr a pseudo-terminal or a pipe."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-m", "cellinr", *argv]
    if not terminal:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300)
        return proc.returncode, proc.stderr
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def test_progress_bars_terminal_pipe_and_quiet(tmp_path):
    from cellinr.io.tiff import write_tiff

    labels = np.zeros((3, 12, 24, 24), np.uint8)
    labels[:, 3:9, 4:10, 4:10], labels[:, 3:9, 14:20, 12:18] = 1, 2
    write_tiff(tmp_path / "cells.tif", labels, axes="TZYX")
    args = ["prepare", str(tmp_path / "cells.tif"), "--size", "16", "--no-preview", "--spacing", "1"]
    code, err = _run([*args, "--out", str(tmp_path / "a")], terminal=True)
    assert code == 0 and BAR in err  # a terminal shows the bars
    code, err = _run([*args, "--out", str(tmp_path / "b")], terminal=False)
    assert code == 0 and BAR not in err and "it/s" not in err  # a pipe (log file, CI) does not
    code, err = _run(["--quiet", *args, "--out", str(tmp_path / "c")], terminal=True)
    assert code == 0 and BAR not in err and err.strip() == ""  # --quiet: nothing on a terminal either


def test_quiet_still_reports_errors_in_one_line(tmp_path):
    code, err = _run(["-q", "prepare", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "d")], terminal=False)
    assert code == 2 and err.strip().count("\n") == 0 and "missing.tif" in err


def test_quiet_and_verbose_exclude_each_other():
    code, err = _run(["-q", "-v", "info", "x"], terminal=False)
    assert code == 2 and "not allowed with argument" in err
