"""MapFiles: what a job reads and writes in a map's directory (the layout is in work_dir).

The worker starts once per job, so every module it imports is paid for once per job:
with one job per task, a few milliseconds of imports are a few percent of a map on a
busy node. This module, and the others the worker imports (``events``, ``errors``,
``ranges``), keep their module-level imports to what a job needs; the client's side of
the work_dir (creating, locking, archiving) is :class:`poolparty.work_dir.WorkDir`,
which extends this class.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import rename_after_writing

if TYPE_CHECKING:
    from typing import Any

#: tasks.idx holds one of these per chunk, plus the end: chunk i is bytes [i, i+1)
OFFSET = struct.Struct("<Q")


def check_private(path: Path) -> None:
    """Refuse a file or directory that another user owns or others can write.

    Pickles run code when loaded: a pickle that someone else could have replaced is
    never loaded.
    """
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise PermissionError(f"{path} is owned by uid {info.st_uid}, not by you: refusing it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is writable by others: refusing it")


class MapFiles:
    """The files of one map that a job touches: its inputs, its result."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.map_id = self.path.name
        self.results_dir = self.path / "results"
        self.logs_dir = self.path / "logs"

    def metadata(self) -> dict[str, Any]:
        return json.loads((self.path / "map.json").read_text())

    def incarnation(self) -> tuple[int, int] | None:
        """Which making of the map's directory this is: map.json's inode and time of
        writing (None: gone). A map that succeeded is removed, and the same map called
        again makes a directory of the same name; a worker of the first, cancelled but
        not yet dead, must not walk into the second by its path."""
        try:
            info = os.stat(self.path / "map.json")
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns

    def read_function(self) -> bytes:
        """The pickled function, after checking nobody else could have written it."""
        return self._read_private(self.path / "function.pkl")

    def read_chunk(self, chunk_id: int) -> bytes:
        """One block's pickled ``(first task, tasks)``."""
        return self.read_blocks(chunk_id, chunk_id + 1)[0]

    def read_blocks(self, first: int, stop: int) -> list[bytes]:
        """Blocks ``[first, stop)`` of pickled tasks, read with one seek and one read
        each from the index and the tasks: the worker never loads the whole map."""
        check_private(self.path)
        with open(self.path / "tasks.idx", "rb") as index:
            index.seek(first * OFFSET.size)
            count = stop - first + 1
            offsets = struct.unpack(f"<{count}Q", index.read(count * OFFSET.size))
        tasks_path = self.path / "tasks.pkl"
        check_private(tasks_path)
        with open(tasks_path, "rb") as tasks_file:
            tasks_file.seek(offsets[0])
            data = tasks_file.read(offsets[-1] - offsets[0])
        base = offsets[0]
        return [data[a - base:b - base] for a, b in zip(offsets, offsets[1:])]

    def _read_private(self, path: Path) -> bytes:
        check_private(self.path)
        check_private(path)
        return path.read_bytes()

    def result_path(self, chunk_id: int) -> Path:
        return self.results_dir / f"{chunk_id}.pkl"

    def write_result(self, chunk_id: int, blob: bytes) -> None:
        """Called by the worker: written under a temporary name, renamed when complete
        (rename_after_writing), so a worker killed mid-write leaves no result."""
        with rename_after_writing.Path(str(self.result_path(chunk_id))) as temporary:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(blob)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
