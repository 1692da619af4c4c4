"""The lobby: where a pool's workers wait for its next map (warm workers).

A worker that ran out of work in its map does not exit at once: for ``idle_timeout``
seconds it waits in its pool's lobby for another map of the same pool (the next
``map``, ``apply_async``, ``Executor.submit``), joins it as a guest, and drains it as a
worker started by hand would (claims under its random id, with a heartbeat). So a
notebook's next cell, or the next round of a loop, starts at once instead of queueing
new jobs; a finished script frees them within ``idle_timeout``.

Layout, a directory the client makes (0700) beside the maps::

    pool-<id>/maps.jsonl        the pool's journal, written by the client only, one JSON
                                line each: {"open": run key, "path": map dir}, {"end": run
                                key}, {"closed": true}. A run key is the map's id and a
                                random suffix: the same map run twice is two runs
    pool-<id>/owner.json        the client's host and pid: a lobby whose client died
                                (kill -9) is removed by the next pool made on that host
    pool-<id>/workers/<name>    one per worker of the pool while it lives: JSON (the run
                                that submitted it and its number there, the run it serves
                                or null), its mtime touched every PRESENCE_BEAT_SECONDS

Why a journal file rather than a directory of announcements: a worker looks at it every
LOOK_SECONDS, and on NFS a directory listing may lag a minute behind, while an open of a
file that exists revalidates its attributes (close-to-open), so a line appended is seen
at the next look. The presence files are listed by the client only to decide how many
new workers a map needs: a hint, never a decision about who runs what (the claims are).

The worker's side imports the standard library only (each job pays for its imports).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

JOURNAL = "maps.jsonl"
OWNER = "owner.json"
WORKERS = "workers"
#: how often an idle worker looks at the journal (one fstat; a read when it grew)
LOOK_SECONDS = 0.05
#: how often a worker's presence file is touched
PRESENCE_BEAT_SECONDS = 2.0
#: a presence file older than this is a worker killed without saying so
PRESENCE_STALE_SECONDS = 20.0


class Journal:
    """A reader of the pool's journal: which maps are open, whether the pool closed.
    Reads only what was appended since its last look."""

    def __init__(self, lobby: str | os.PathLike) -> None:
        self.path = Path(lobby) / JOURNAL
        self.open_maps: dict[str, str] = {}  # run key -> the map's directory, in order
        #: run key -> the making of the map's directory it announced (map.json's
        #: "incarnation"): the same map run again later has the same directory
        self.incarnations: dict[str, str | None] = {}
        self.closed = False
        self._offset = 0
        self._size = -1

    def refresh(self) -> bool:
        """Read new lines; whether the journal grew. A pool whose journal is gone
        (its client removed it) is closed."""
        try:
            with open(self.path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size == self._size:
                    return False
                file.seek(self._offset)
                data = file.read(max(0, size - self._offset))
        except FileNotFoundError:
            self.closed = True
            return True
        self._size = size
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written: next look
        self._offset += len(complete)
        for line in complete.splitlines():
            self._apply(line)
        return True

    def _apply(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return
        if "open" in entry:
            self.open_maps[entry["open"]] = entry["path"]
            self.incarnations[entry["open"]] = entry.get("incarnation")
        elif "end" in entry:
            self.open_maps.pop(entry["end"], None)
        elif entry.get("closed"):
            self.closed = True

    def is_open(self, run_key: str) -> bool:
        self.refresh()
        return run_key in self.open_maps and not self.closed


class Presence:
    """A worker's presence file in the lobby, touched by a thread while it lives, so the
    client counts it as a worker a new map need not submit."""

    def __init__(self, lobby: str | os.PathLike, origin: str, number: int | None) -> None:
        self.origin, self.number = origin, number
        self.path = Path(lobby) / WORKERS / f"{origin}.{number}.{os.urandom(4).hex()}"
        self.serve(origin)
        self._stopped = threading.Event()
        threading.Thread(target=self._beat, daemon=True, name="poolparty-presence").start()

    def serve(self, map_id: str | None) -> None:
        """Say which map this worker now serves (None: idle, waiting for one)."""
        record = {"origin": self.origin, "number": self.number, "serving": map_id,
                  "host": os.uname().nodename, "pid": os.getpid()}
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            with open(temporary, "w") as file:
                file.write(json.dumps(record) + "\n")
            os.replace(temporary, self.path)
        except OSError:  # the lobby was removed: the pool is gone
            pass

    def _beat(self) -> None:
        while not self._stopped.wait(PRESENCE_BEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def leave(self) -> None:
        self._stopped.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def read_presence(lobby: Path, fresh_only: bool = True) -> list[dict[str, Any]]:
    """The client's look at the workers of a pool that say they live (fresh presence
    files), each record with its ``age``. A hint: a listing may lag."""
    directory = lobby / WORKERS
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    now, found = time.time(), []
    for name in names:
        if name.startswith("."):
            continue
        try:
            with open(directory / name, "rb") as file:
                mtime = os.fstat(file.fileno()).st_mtime
                record = json.loads(file.read())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and (not fresh_only or now - mtime < PRESENCE_STALE_SECONDS):
            found.append(dict(record, age=now - mtime))
    return found


class Lobby:
    """The client's side: makes the lobby, announces the pool's maps in the journal,
    counts the workers waiting there, and closes it."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / f"pool-{os.urandom(6).hex()}"
        os.mkdir(self.path, 0o700)
        os.chmod(self.path, 0o700)  # whatever the umask
        os.mkdir(self.path / WORKERS, 0o700)
        os.chmod(self.path / WORKERS, 0o700)
        os.close(os.open(self.path / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        owner = {"host": os.uname().nodename, "pid": os.getpid()}
        (self.path / OWNER).write_text(json.dumps(owner) + "\n")
        self._lock = threading.Lock()
        self.closed = False
        remove_abandoned(Path(root))

    def _append(self, entry: dict[str, Any]) -> None:
        with self._lock:
            descriptor = os.open(self.path / JOURNAL, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(descriptor, json.dumps(entry).encode() + b"\n")
            finally:
                os.close(descriptor)

    def announce(self, run_key: str, map_dir: Path, incarnation: str | None = None) -> None:
        """A map runs (``run_key``: this run of it, ``incarnation``: the making of its
        directory): the pool's waiting workers join it."""
        self._append({"open": run_key, "path": str(map_dir), "incarnation": incarnation})

    def withdraw(self, run_key: str) -> None:
        """The map's run ended (however): its guests stop claiming from it."""
        self._append({"end": run_key})

    def warm_workers(self, run_key: str, running: set[str]) -> int:
        """How many workers of the pool a map may count on besides its own: those
        idle in the lobby, serving this map, or still leaving a map that ended."""
        def available(record: dict[str, Any]) -> bool:
            if record.get("origin") == run_key:  # its own: counted as such
                return False
            serving = record.get("serving")
            return serving is None or serving == run_key or serving not in running

        return sum(1 for record in read_presence(self.path) if available(record))

    def present(self) -> set[tuple[str, int | None]]:
        """``(run key, number)`` of each worker whose presence file is still there,
        fresh or not (a worker leaving removes it)."""
        return {(record.get("origin"), record.get("number"))
                for record in read_presence(self.path, fresh_only=False)}

    def close(self) -> None:
        """The pool is closed: every waiting worker leaves at its next look."""
        if not self.closed:
            self.closed = True
            self._append({"closed": True})

    def remove(self) -> None:
        """Delete the lobby (after close): a worker that still looks finds no journal,
        which also says closed."""
        shutil.rmtree(self.path, ignore_errors=True)


def remove_abandoned(root: Path) -> None:
    """Remove the lobbies under ``root`` whose client, on this host, is dead (killed
    before it could close them): their waiting workers see the journal gone and leave,
    instead of waiting out their idle_timeout, and nothing stays behind. A lobby of
    another host is left alone (its client can't be checked from here)."""
    for lobby in root.glob("pool-*"):
        try:
            if lobby.stat().st_uid != os.getuid():
                continue
            owner = json.loads((lobby / OWNER).read_text())
            if owner.get("host") != os.uname().nodename or pid_alive(int(owner["pid"])):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        shutil.rmtree(lobby, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
