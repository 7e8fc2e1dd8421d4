"""Which part of a job this process does: ``--shard K/N``, torchrun's RANK / WORLD_SIZE, or all of it.

The command line takes ``--shard``, or under torchrun RANK / WORLD_SIZE (:func:`shard_from_env`);
the Python functions take ``shard=`` only.

A job of n items (sequences) is split round-robin: shard K of N does items K, K + N, K + 2N, ...
Every item's output depends only on the item (its own seed), so the union of the N shards' files
equals the output of one process doing everything.

Also the small file-system primitives the shards coordinate with: :func:`create_once` writes a file
only if it does not exist yet (atomic even when several processes race, also on NFS), so the first
shard to start fixes a job's options and every later one is compared against them.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cellinr.errors import ParameterError


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
