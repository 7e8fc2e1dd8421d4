"""Crash consistency (slow): SIGKILL ``train``, ``generate``, ``prepare`` and ``benchmark`` at random moments.

After every kill nothing incomplete is visible under a final name (a run folder, data set or
benchmark appears complete or not at all; a generated sequence's files appear with their record),
and a rerun (``--resume`` for an interrupted training) finishes with outputs byte-identical to an
uninterrupted run (the ``seconds`` column of ``log.csv`` excepted: it is wall time). The same on a
full disk (a small tmpfs, root only): one error line, exit 1, nothing partial; after freeing space
the rerun completes, identical again.

Runs are tiny (the ``tiny`` preset, 16^3-20^3 grids, one thread) so the module takes a few minutes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("CELLINR_CRASH_KILLS", "10"))
SRC = Path(__file__).resolve().parents[1] / "src"
ENV = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def cellinr(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cellinr", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*args, cwd: Path) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    proc = cellinr(*args, cwd=cwd)
    _, err = proc.communicate(timeout=900)
    return proc.returncode, err, time.perf_counter() - t0


def kill_after(seconds: float, *args, cwd: Path) -> bool:
    """Start the command and SIGKILL it after ``seconds``; True if it was killed (not finished before)."""
    proc = cellinr(*args, cwd=cwd)
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return True


def tree(root: Path, *, skip_seconds: bool = True) -> dict[str, str]:
    """sha256 of every file under ``root`` (log.csv without its wall-time column)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if skip_seconds and p.name == "log.csv":
            rows = list(csv.reader(io.StringIO(data.decode())))
            if rows and "seconds" in rows[0]:
                k = rows[0].index("seconds")
                data = "\n".join(",".join(r[:k] + r[k + 1:]) for r in rows).encode()
        out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------------
# what "complete" means per command


def check_run(out: Path) -> None:
    from cellinr.model.run import load_run

    if out.exists():
        load_run(out)  # complete, consistent, checksum matching


def check_dataset(out: Path) -> None:
    from cellinr.io.sdf_dataset import SDFDataset

    if out.exists():
        ds = SDFDataset(out)
        for i in range(len(ds)):
            list(ds.iter_frames(i))


def check_benchmark(out: Path) -> None:
    if out.exists():
        info = json.loads((out / "benchmark.json").read_text())
        for s in info["sequences"]:
            assert (out / "sequences" / f"{s['name']}_image.tif").is_file()
            assert (out / "sequences" / f"{s['name']}_mask.tif").is_file()


def check_generated(out: Path) -> None:
    """Every visible sequence has its record, every record's files are complete and readable."""
    import h5py

    from cellinr.io.tiff import read_tiff

    if not out.exists():
        return
    records = {p.stem: json.loads(p.read_text()) for p in out.glob("cell_*.json")}
    for name, record in records.items():
        for kind, files in record["files"].items():
            for rel in files if isinstance(files, list) else [files]:
                path = out / rel
                assert path.is_file(), f"{name}: {rel} missing"
                if path.suffix == ".tif":
                    read_tiff(path)
                elif path.suffix == ".h5":
                    with h5py.File(path, "r") as f:
                        f["sdf"][...]
    visible = {p.name.split(".")[0].removesuffix("_mip") for p in out.glob("cell_*") if p.is_file()}
    visible |= {p.name for p in (out / "meshes").iterdir()} if (out / "meshes").is_dir() else set()
    assert visible <= set(records), f"files of unfinished sequences visible: {sorted(visible - set(records))}"


# ----------------------------------------------------------------------------------------------
# the commands


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    rc, err, _ = finish("simulate", "--kind", "deforming", "--sequences", "2", "--frames", "3", "--size", "16",
                        "--out", root / "sim", cwd=root)
    assert rc == 0, err
    rc, err, _ = finish("prepare", root / "sim", "--out", root / "ds", "--size", "20", cwd=root)
    assert rc == 0, err
    (root / "cfg.yaml").write_text("train:\n  epochs: 4\n  checkpoint_every: 1\n")
    rc, err, _ = finish("train", root / "ds", "--out", root / "run", "--preset", "tiny", "--config", root / "cfg.yaml",
                        "--device", "cpu", cwd=root)
    assert rc == 0, err
    return root


def commands(base: Path) -> dict:
    """name -> (arguments with OUT for the output, checker, rerun arguments for an interrupted state)."""
    return {
        "prepare": (["prepare", base / "sim", "--out", "OUT", "--size", "20"], check_dataset),
        "benchmark": (["benchmark", base / "sim", "--out", "OUT", "--device", "cpu"], check_benchmark),
        "generate": (["generate", base / "run", "--out", "OUT", "--n", "3", "--size", "16", "--formats",
                      "tiff,sdf,mesh,mip", "--device", "cpu"], check_generated),
        "train": (["train", base / "ds", "--out", "OUT", "--preset", "tiny", "--config", base / "cfg.yaml",
                   "--device", "cpu", "--seed", "3"], check_run),
    }


def _args(args, out: Path) -> list:
    return [out if a == "OUT" else a for a in args]


def _rerun_args(name: str, args: list, out: Path) -> list:
    if name == "train" and (out.parent / f".{out.name}.incomplete").exists():
        return [*args, "--resume"]
    return args


@pytest.mark.parametrize("name", ["prepare", "benchmark", "generate", "train"])
def test_sigkill_at_random_moments(name, base, tmp_path):
    args, check = commands(base)[name]
    reference = tmp_path / "reference" / "out"
    rc, err, seconds = finish(*_args(args, reference), cwd=tmp_path)
    assert rc == 0, err
    expected = tree(reference)
    rng = random.Random(f"cellinr-{name}")
    killed = 0
    for k in range(KILLS):
        work = tmp_path / f"kill{k}"
        work.mkdir()
        out = work / "out"
        # a random moment of the run (its first fifth is mostly Python start-up and imports)
        killed += kill_after(rng.uniform(0.2, 1.0) * seconds, *_args(args, out), cwd=work)
        check(out)  # nothing incomplete under the final name
        if not out.exists() or name == "generate":  # (a folder output under its name is finished already)
            rc, err, _ = finish(*_rerun_args(name, _args(args, out), out), cwd=work)
            assert rc == 0, f"rerun after kill {k}: {err}"
        assert tree(out) == expected, f"kill {k}: the rerun's output differs from an uninterrupted run"
        assert hidden(work) == [], f"kill {k}: left {hidden(work)}"
        shutil.rmtree(work)
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} runs were still running when killed"


# ----------------------------------------------------------------------------------------------
# full disk


@pytest.fixture
def small_fs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mount not permitted")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(fs: Path, leave: int) -> Path:
    """Fill ``fs`` but ``leave`` bytes."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    filler = fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


@pytest.mark.parametrize("name", ["prepare", "benchmark", "generate", "train"])
def test_full_disk_then_free_space(name, base, tmp_path, small_fs):
    args, check = commands(base)[name]
    reference = tmp_path / "reference" / "out"
    rc, err, _ = finish(*_args(args, reference), cwd=tmp_path)
    assert rc == 0, err
    expected = tree(reference)
    size = sum((reference / p).stat().st_size for p in expected)
    filler = _fill(small_fs, size // 3)
    out = small_fs / "out"
    rc, err, _ = finish(*_args(args, out), cwd=tmp_path)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("WARNING:", "INFO:"))]
    assert rc == 1, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"cellinr {name}: error: ") and "no space left on device" in lines[0], err
    check(out)
    if name != "generate":
        assert not out.exists()
    filler.unlink()  # free the space: the rerun completes
    rc, err, _ = finish(*_rerun_args(name, _args(args, out), out), cwd=tmp_path)
    assert rc == 0, err
    assert tree(out) == expected
    assert [p for p in hidden(small_fs)] == []
