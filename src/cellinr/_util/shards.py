"""Which part of a job this process does: ``--shard K/N``, torchrun's RANK / WORLD_SIZE, or all of it.

The command line takes ``--shard``, or under torchrun RANK / WORLD_SIZE (:func:`shard_from_env`);
the Python functions take ``shard=`` only.

A job of n items (sequences) is split round-robin: shard K of N does items K, K + N, K + 2N, ...
Every item's output depends only on the item (its own seed), so the union of the N shards' files
equals the output of one process doing everything.

Also the small file-system primitives the shards coordinate with: :func:`create_once` writes a file
only if it does not exist yet (atomic even when several processes race, also on NFS), so the first
shard to start fixes a job's options and every later one is compared against them; and for outputs
that are built as one folder (a benchmark), :func:`shard_part` / :func:`merge_parts`: each shard builds
a part folder next to the output, and the shard that finds every part complete moves them into the
output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

from cellinr.errors import OutputExistsError, ParameterError

#: The record a part folder holds when it is complete (options and the shard's results).
PART_RECORD = ".part.json"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, i: int) -> bool:
        """Whether item ``i`` of the job belongs to this shard."""
        return i % self.count == self.index

    def select(self, items: list) -> list:
        return [item for i, item in enumerate(items) if self.owns(i)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, *, flag: str = "--shard") -> Shard:
    """``"K/N"`` -> Shard(K, N); one clear error line for anything else or K >= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ParameterError(f"{flag} {text!r}: expected K/N, e.g. 0/4 (shard K of N, K = 0 .. N-1)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ParameterError(f"{flag} {text}: N must be at least 1")
    if index >= count:
        raise ParameterError(f"{flag} {text}: K must be smaller than N (shards are numbered 0 .. {count - 1})")
    return Shard(index, count)


def resolve_shard(shard: str | Shard | None = None) -> Shard:
    """``shard`` as a :class:`Shard` (None: the whole job)."""
    if isinstance(shard, Shard):
        return shard
    return Shard() if shard is None else parse_shard(shard)


def shard_from_env(environ=None) -> Shard | None:
    """torchrun's RANK / WORLD_SIZE as a Shard, or None outside torchrun (the command line's default).

    The library functions never read the environment themselves: a ``reconstruct`` called inside a
    torchrun training job must not silently do only a part of its work.
    """
    env = os.environ if environ is None else environ
    world = env.get("WORLD_SIZE")
    if world is None:
        return None
    rank = env.get("RANK", "0")
    if not (world.isdigit() and rank.isdigit()):
        raise ParameterError(f"WORLD_SIZE={world!r} / RANK={rank!r}: expected non-negative integers")
    return parse_shard(f"{rank}/{world}", flag="RANK/WORLD_SIZE")


def create_once(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` unless it exists; True if this call created it.

    The content is written to a temporary sibling and hard-linked into place: ``link`` fails if the
    target exists, so of several racing processes exactly one creates the file, whole.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.stem}-{os.getpid()}{path.suffix}")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create (atomic, but not the content)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def parts_root(out: str | os.PathLike) -> Path:
    """The folder next to ``out`` that holds the shards' part folders: ``.<name>.shards``."""
    out = Path(out)
    return out.parent / f".{out.name}.shards"


@contextlib.contextmanager
def shard_part(out, shard: Shard, options: dict, overwrite: bool) -> Iterator[Path | None]:
    """This shard's part folder for ``out``, built atomically; yields None when it is complete already.

    The first shard records ``options``; a shard started with other options raises
    :class:`OutputExistsError` (one line) before writing anything. The caller finishes a part with
    :func:`write_part_record`.
    """
    from cellinr._util.atomic import atomic_dir

    root = parts_root(out)
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(options, indent=1, sort_keys=True)
    if overwrite:
        (root / "options.json").write_text(text, encoding="utf-8")
    elif not create_once(root / "options.json", text) and (root / "options.json").read_text(encoding="utf-8") != text:
        raise OutputExistsError(f"{out}: other shards of this job were started with other options; "
                                f"pass --overwrite or remove {root}")
    part = root / f"{shard.index}-of-{shard.count}"
    if (part / PART_RECORD).is_file() and not overwrite:
        yield None
        return
    with atomic_dir(part, overwrite=True) as tmp:
        yield tmp


def write_part_record(part: Path, options: dict, results) -> None:
    """Mark a part folder complete with its options and results (JSON)."""
    (Path(part) / PART_RECORD).write_text(json.dumps({"options": options, "results": results}, indent=1),
                                           encoding="utf-8")


def merge_parts(out, shard: Shard, options: dict, overwrite: bool,
                finish: Callable[[Path, list], None]) -> bool:
    """If all ``shard.count`` parts are complete, move their files into ``out`` (built atomically).

    Exactly one of several shards calling this wins (it renames the parts folder first); it calls
    ``finish(folder, [results of part 0, 1, ...])`` to write the output's own files. Returns whether
    this call merged.
    """
    from cellinr._util.atomic import atomic_dir

    root = parts_root(out)
    names = [f"{k}-of-{shard.count}" for k in range(shard.count)]
    if not all((root / name / PART_RECORD).is_file() for name in names):
        log.info("shard %s done; the last shard to finish assembles %s", shard, out)
        return False
    claimed = root.with_name(f"{root.name}.merging-{os.getpid()}")
    try:
        os.rename(root, claimed)
    except OSError:  # another shard is merging
        return False
    results = []
    expected = json.loads(json.dumps(options))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for name in names:
            part = claimed / name
            record = json.loads((part / PART_RECORD).read_text(encoding="utf-8"))
            if record["options"] != expected:
                raise OutputExistsError(f"{out}: shard {name} was made with other options")
            results.append(record["results"])
            for f in sorted(part.rglob("*")):
                if f.is_file() and f.name != PART_RECORD:
                    target = tmp / f.relative_to(part)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(f, target)
        finish(tmp, results)
    shutil.rmtree(claimed, ignore_errors=True)
    return True
