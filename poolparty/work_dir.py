"""WorkDir: the only owner of file names and of the on-disk format of one map.

Layout of ``<root>/<map_id>/`` (mode 0700, every file private to the user)::

    map.json             what the map is: number of tasks, block, claim unit, workers,
                         time limit, python, backend
    function.pkl         cloudpickle of (function, star, initializer, initargs)
    tasks.pkl            the tasks pickled in blocks, one after the other
    tasks.idx            offsets into tasks.pkl: 8 bytes per block + 1 (the worker seeks)
    job.sh               the job script the scheduler runs: one worker per job
    jobs.jsonl           one line per submission: job id, and for each worker its index/log
    claims/ requeue/ retries/   who runs which tasks (poolparty.claims; JSON, no pickles)
    results/<claim>.pkl  written by workers, (first task, outcomes) (temporary name, then
                         renamed: atomic)
    logs/                stdout+stderr of running workers, named by the backend; the
                         worker's events are lines in them marked poolparty-event:
    events.jsonl         the client's events and those of the workers that ended
    results.zip          results gathered by the client; the small files are then deleted
    logs.zip             logs of ended workers; events.jsonl once the map ended; the claim
                         files once the map succeeded
    client.log.jsonl     the client's log, one JSON object per line

So a running map holds a file per claim and a few per running worker, and a finished
one about ten.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import stat
import struct
import sys
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .claims import CLAIMS, REQUEUE, RETRIES, ClaimBoard
from .errors import InvalidInputError
from .events import MARK, TASK_MARK, output_of_attempts
from .map_files import OFFSET, MapFiles, check_private

log = logging.getLogger("poolparty")

#: errors of a full disk, a quota or a file size limit: the user must make room
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

_CLAIMED: set[str] = set()
_CLAIMED_LOCK = threading.Lock()
_RESULT_NAME = re.compile(r"^(\d+)\.pkl$")


@dataclass(frozen=True)
class JobRef:
    """Where one chunk went: the scheduler's job id, its array index and its log file."""

    job_id: str
    index: int | None
    log_name: str


def new_map_id() -> str:
    """A readable, sortable id that two maps started in the same second never share."""
    return time.strftime("%Y%m%d-%H%M%S-") + _random_hex()


def default_root() -> Path:
    """``./.poolparty`` in the current directory: on clusters it is on the shared disk."""
    return Path.cwd() / ".poolparty"


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The absolute directory maps go under: ``work_dir=`` or the default."""
    return Path(root).expanduser().absolute() if root else default_root()


def _random_hex() -> str:
    """Eight random hex digits for temporary names (os.urandom: the secrets module is a
    costly import on every job start)."""
    return os.urandom(4).hex()


def check_safe_root(root: Path) -> None:
    """Refuse a work_dir root where others could swap our map directories.

    A directory that others can write (without the sticky bit, as /tmp has) lets them
    rename a map's directory and put their own pickles in its place; so does one owned
    by another user (other than root), who can change its mode at will.
    """
    info = os.stat(root)
    if info.st_uid not in (os.getuid(), 0):
        raise InvalidInputError(
            f"work_dir {str(root)!r} is owned by uid {info.st_uid}, not by you: its owner "
            f"could replace the code your jobs load. Pass work_dir= a directory of your own."
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        raise InvalidInputError(
            f"work_dir {str(root)!r} is writable by others (mode {stat.filemode(info.st_mode)})"
            f": they could replace the code your jobs load. Pass work_dir= a directory of your "
            f"own, or remove their write access (chmod go-w)."
        )


def _make_private_dir(path: Path, exist_ok: bool = False) -> None:
    """Create ``path`` with mode 0700 whatever the umask."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if exist_ok and path.is_dir():
            return
        raise
    os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) under a temporary name, then rename."""
    temporary = path.with_name(f".{path.name}.{_random_hex()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


class WorkDir(MapFiles):
    """One map's directory; every path and format decision lives here (what a job
    touches, in ``MapFiles``: poolparty/map_files.py)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self._jobs_of_chunk: dict[int, list[JobRef]] = {}
        self._chunk_of_job: dict[tuple[str, int | None], int] = {}
        self.resumed = False
        self._lock_descriptor: int | None = None
        self._zips: dict[str, zipfile.ZipFile] = {}

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, root: str | os.PathLike | None, identity: str | None = None) -> WorkDir:
        """The private directory of one map under ``root``, locked by this client.

        With an ``identity`` (a digest of the function, the user's code and the tasks) a
        directory left by a client that ended is re-attached: its results and jobs are
        used, nothing that finished is rerun. Without one, or when a live client holds
        that directory, a fresh directory is made. Raises :class:`InvalidInputError`
        naming the fix when ``root`` can't be used.
        """
        root_path = cls._usable_root(root)
        names = [identity] + [f"{identity}-{n}" for n in range(2, 100)] if identity else []
        for name in names:
            work_dir = cls(root_path / name)
            if work_dir._claim():
                return work_dir
        work_dir = cls(root_path / new_map_id())
        if not work_dir._claim():  # pragma: no cover - a random name is never taken
            raise InvalidInputError(f"could not create a work_dir in {root_path}")
        return work_dir

    @classmethod
    def inspect(cls, path: str | os.PathLike) -> WorkDir:
        """An existing map's directory opened to look at, not to run (poolparty status):
        its job records are loaded; nothing is locked, written or repaired."""
        work_dir = cls(Path(path).absolute())
        work_dir._load_job_records()
        return work_dir

    @staticmethod
    def _usable_root(root: str | os.PathLike | None) -> Path:
        root_path = resolve_root(root)
        if not root_path.exists():
            try:
                root_path.parent.mkdir(parents=True, exist_ok=True)
                _make_private_dir(root_path, exist_ok=True)  # another map may be first
            except OSError as error:
                raise InvalidInputError(
                    f"work_dir {str(root_path)!r} does not exist and can't be created "
                    f"({error.strerror}). Pass work_dir= a directory you can write, on a disk "
                    f"the compute nodes share."
                ) from error
        if not root_path.is_dir():
            raise InvalidInputError(f"work_dir {str(root_path)!r} is not a directory.")
        if not os.access(root_path, os.W_OK | os.X_OK) or not _can_create_in(root_path):
            raise InvalidInputError(
                f"work_dir {str(root_path)!r} is not writable by you. Pass work_dir= a "
                f"directory you can write, on a disk the compute nodes share."
            )
        check_safe_root(root_path)
        return root_path

    def _claim(self) -> bool:
        """Create this directory, or take over an existing one nobody holds.

        The lock is an fcntl lock on ``client.lock``, released by the kernel when the
        client dies, however it dies. A new directory is made whole and locked under a
        hidden name, then renamed into place, so nobody ever finds it half made. A
        directory found may be removed by its holder while we reach for its lock (see
        :meth:`remove`): then we start over.
        """
        for _ in range(100):
            claimed = self._create() or self._take_over()
            if claimed is not None:
                return claimed
        return False  # pragma: no cover - removed under us a hundred times in a row

    def _create(self) -> bool:
        """Make the directory, locked; False when one exists at our path already."""
        staging = self.path.with_name(f".creating-{self.path.name}-{_random_hex()}")
        _make_private_dir(staging)
        _make_private_dir(staging / self.results_dir.name)
        _make_private_dir(staging / self.logs_dir.name)
        ClaimBoard(staging, 0).create()  # claims/, requeue/, retries/ (poolparty.claims)
        descriptor = os.open(staging / "client.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows it
        with _CLAIMED_LOCK:  # no thread of ours takes it between the rename and this
            try:
                os.rename(staging, self.path)  # replaces only an empty directory
                created = True
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                created = False
            if created:
                _CLAIMED.add(str(self.path))
        if not created:
            os.close(descriptor)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        self._lock_descriptor = descriptor
        self.resumed = False
        return True

    def _take_over(self) -> bool | None:
        """Lock the directory at our path, left by a client that ended: False when it
        is held, not a directory or not private; None when it went away meanwhile."""
        try:
            if not stat.S_ISDIR(os.lstat(self.path).st_mode):
                return False
            check_private(self.path)
        except FileNotFoundError:
            return None
        except PermissionError as error:  # someone else's: never resume from it
            log.warning("not resuming from %s: %s", self.path, error)
            return False
        with _CLAIMED_LOCK:  # fcntl locks are per process: threads need their own check
            if str(self.path) in _CLAIMED:
                return False
            try:
                descriptor = os.open(self.path / "client.lock", os.O_WRONLY | os.O_CREAT, 0o600)
            except FileNotFoundError:  # removed since we saw it
                return None
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(descriptor)
                return False
            if not self._locks_this_directory(descriptor):  # its holder moved it away
                os.close(descriptor)
                return None
            _CLAIMED.add(str(self.path))
        self._lock_descriptor = descriptor
        self.resumed = True
        # its creator may have been an older poolparty that made these after the lock
        _make_private_dir(self.results_dir, exist_ok=True)
        _make_private_dir(self.logs_dir, exist_ok=True)
        self._load_job_records()
        self._repair_archives()
        self._restore_claims()
        return True

    def _restore_claims(self) -> None:
        """Put back the claims a map that ended archived (archive_claims), before any
        worker of this run starts: a map run again with tasks left to do (futures
        cancelled the first time) needs its chain of claims, or its workers would find
        no claims/ and end at once, again and again."""
        if (self.path / CLAIMS).is_dir():
            return
        archived = self.archived_claims()
        ClaimBoard(self.path, 0).create()
        for name, blob in archived.items():
            descriptor = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(blob)

    def _locks_this_directory(self, descriptor: int) -> bool:
        """Whether the lock file we locked is still the one at our path: a holder
        removing its directory first renames it away, lock file and all."""
        try:
            here = os.stat(self.path / "client.lock")
        except FileNotFoundError:
            return False
        locked = os.fstat(descriptor)
        return (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino)

    def release(self) -> None:
        """Let another client take this directory (the map ended, or gave up)."""
        self.close_archives()
        if self._lock_descriptor is not None:
            with _CLAIMED_LOCK:
                os.close(self._lock_descriptor)
                self._lock_descriptor = None
                _CLAIMED.discard(str(self.path))

    def has_inputs(self) -> bool:
        """True when an earlier client finished writing this map's inputs."""
        return (self.path / "map.json").exists()

    def _load_job_records(self) -> None:
        path = self.path / "jobs.jsonl"
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the last line, torn by a crash
                continue
            for chunk, (index, log_name) in record["chunks"].items():
                self._remember(int(chunk), JobRef(record["job_id"], index, log_name))

    def _remember(self, chunk_id: int, ref: JobRef) -> None:
        self._jobs_of_chunk.setdefault(chunk_id, []).append(ref)
        self._chunk_of_job[(ref.job_id, ref.index)] = chunk_id

    # ------------------------------------------------------------------ inputs
    def write_inputs(
        self,
        function_blob: bytes,
        chunk_blobs: Iterable[bytes],
        metadata: dict[str, Any],
    ) -> int:
        """Write the function, the chunks and map.json; return the number of chunks.

        A full disk, a quota or a file size limit raises :class:`InvalidInputError`
        saying so, with no temporary file left behind.
        """
        try:
            return self._write_inputs(function_blob, chunk_blobs, metadata)
        except OSError as error:
            for leftover in self.path.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
            if error.errno not in _NO_ROOM:
                raise
            raise InvalidInputError(
                f"could not write the tasks to {self.path}: {error.strerror}. Nothing was "
                f"submitted. Free some space (or quota), or pass work_dir= a directory on a "
                f"disk with room that the compute nodes share."
            ) from error

    def _write_inputs(
        self, function_blob: bytes, chunk_blobs: Iterable[bytes], metadata: dict[str, Any]
    ) -> int:
        _write_private(self.path / "function.pkl", function_blob)
        offsets = [0]
        temporary = self.path / f".tasks.pkl.{_random_hex()}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as tasks_file:
            for blob in chunk_blobs:
                tasks_file.write(blob)
                offsets.append(offsets[-1] + len(blob))
        os.replace(temporary, self.path / "tasks.pkl")
        _write_private(self.path / "tasks.idx", b"".join(OFFSET.pack(o) for o in offsets))
        _write_private(self.path / "map.json", json.dumps(metadata, indent=1).encode())
        return len(offsets) - 1

    def write_job_script(self, python_path: str, core_dumps: bool = False,
                         lobby: tuple[Path, float, str] | None = None) -> Path:
        """The script every job runs: the fixed worker module, nothing generated.
        ``lobby``: the pool's lobby, idle timeout and this run's key in the lobby, for
        warm workers (poolparty.lobby).

        Core dumps are off unless asked for: a cluster's execution daemon may allow
        them, and each segfaulting task would leave a core file (megabytes) in the job's
        directory, which is the caller's."""
        script = self.path / "job.sh"
        # Not exec: the shell stays to say, in the job's log, how the worker ended (a
        # signal from the OOM killer, a segfault), as the scheduler may not; read by
        # poolparty.crashes, which tells a task that killed its worker from a lost job.
        # (events.OWN_LINE_PREFIXES: the tasks' output relayed leaves these lines out)
        text = (
            "#!/bin/sh\n"
            f"# poolparty map {self.map_id}: runs chunks of tasks; arguments say which.\n"
            + ("" if core_dumps else "ulimit -c 0 2>/dev/null\n")
            + f"{shlex.quote(python_path)} -m poolparty.worker "
            + f"--incarnation {shlex.quote(str(self.metadata().get('incarnation', '-')))} "
            + ("" if lobby is None else
               f"--lobby {shlex.quote(str(lobby[0]))} --idle-timeout {lobby[1]:g} "
               f"--run {shlex.quote(lobby[2])} ")
            + f"{shlex.quote(str(self.path))} \"$@\"\n"
            "status=$?\n"
            "if [ $status -gt 128 ] && [ $status -le 192 ]; then\n"
            "    echo \"poolparty: the worker was killed by signal $((status - 128))\" >&2\n"
            "else\n"
            "    echo \"poolparty: the worker exited with status $status\" >&2\n"
            "fi\n"
            "exit $status\n"
        )
        _write_private(script, text.encode())
        os.chmod(script, 0o700)
        return script

    @property
    def script_path(self) -> Path:
        return self.path / "job.sh"

    # ------------------------------------------------------------------ results
    def new_result_ids(self) -> list[int]:
        """Chunk ids with a result file waiting to be gathered (cheap: one listdir)."""
        found = []
        with os.scandir(self.results_dir) as entries:
            for entry in entries:
                match = _RESULT_NAME.match(entry.name)
                if match:
                    found.append(int(match.group(1)))
        return found

    def read_result(self, chunk_id: int) -> bytes:
        return self._read_private(self.result_path(chunk_id))

    def archive(self, results: dict[int, bytes], logs: dict[str, bytes] | None = None) -> None:
        """Move gathered results and their jobs' logs (``logs_of(results)``, read once
        by the caller, or here) into the zip archives.

        The small files are deleted only after the archive is flushed, so a crash in
        between leaves a result in both places, never in neither.
        """
        if not results:
            return
        self._append_to_zip("results.zip", {f"{c}.pkl": blob for c, blob in results.items()})
        self.archive_logs(self.logs_of(results) if logs is None else logs)
        for chunk_id in results:
            self.result_path(chunk_id).unlink(missing_ok=True)

    def logs_of(self, chunk_ids: Iterable[int]) -> dict[str, bytes]:
        """The logs on disk of these chunks' jobs, oldest attempt first, by their name in
        logs.zip (``<chunk>/<log file>``); a log archived already or never written is
        left out."""
        logs = {}
        for chunk_id in chunk_ids:
            for ref in self._jobs_of_chunk.get(chunk_id, []):
                try:
                    logs[f"{chunk_id}/{ref.log_name}"] = (self.logs_dir / ref.log_name).read_bytes()
                except OSError:
                    pass
        return logs

    def guest_logs(self) -> dict[str, bytes]:
        """The logs warm workers of the pool wrote while visiting this map, by their
        name in logs.zip (``guest/guest-<worker>.log``)."""
        logs = {}
        for path in sorted(self.logs_dir.glob("guest-*.log")):
            try:
                logs[f"guest/{path.name}"] = path.read_bytes()
            except OSError:
                pass
        return logs

    def archive_logs(self, logs: dict[str, bytes]) -> None:
        """Append logs (named as logs_of names them) to logs.zip, then delete them."""
        self._append_to_zip("logs.zip", logs)
        for name in logs:
            (self.logs_dir / name.split("/", 1)[1]).unlink(missing_ok=True)

    def archived_results(self) -> dict[int, bytes]:
        """Results already gathered into results.zip (by this client or an earlier one);
        a chunk run again after a failure is in it twice: the last one counts."""
        results = {}
        for name, blob in _read_zip(self.path / "results.zip"):
            match = _RESULT_NAME.match(name)
            if match:
                results[int(match.group(1))] = blob
        return results

    def _append_to_zip(self, name: str, members: dict[str, bytes]) -> None:
        """Append to an archive kept open for the whole map.

        Reopening a zip reads its whole central directory, which made gathering
        quadratic in the number of chunks. Kept open, each result costs its own bytes;
        the central directory is written when the map ends, and if the client dies
        before that the members are salvaged from their local headers (_read_zip).
        """
        if not members:
            return
        archive = self._zips.get(name)
        if archive is None:
            path = self.path / name
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                mode = "w"
            else:
                mode = "a"
            archive = zipfile.ZipFile(path, mode, compression=zipfile.ZIP_DEFLATED, compresslevel=1)
            self._zips[name] = archive
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a rerun chunk: "Duplicate name"
            for member, blob in members.items():
                archive.writestr(member, blob, compress_type=compression_for(blob))
        archive.fp.flush()  # type: ignore[union-attr] - in the kernel before files are deleted

    def close_archives(self) -> None:
        """Write the archives' central directories (the map ended, or gave up)."""
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()

    def _repair_archives(self) -> None:
        """A client that died left archives without a central directory: rewrite them
        from their salvaged members before appending to them."""
        for name in ("results.zip", "logs.zip"):
            path = self.path / name
            if not path.exists():
                continue
            try:
                zipfile.ZipFile(path).close()
                continue
            except zipfile.BadZipFile:
                pass
            members = list(_salvage_zip(path.read_bytes()))
            temporary = path.with_name(f".{name}.{_random_hex()}.tmp")
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
                for member, blob in members:
                    archive.writestr(member, blob, compress_type=compression_for(blob))
            os.replace(temporary, path)

    # ------------------------------------------------------------------ jobs and logs
    def record_jobs(self, job_id: str, chunks: dict[int, tuple[int | None, str]]) -> None:
        """Remember that ``job_id`` runs these chunks: ``{chunk: (array index, log name)}``.

        Kept in memory for the poll loop and appended to jobs.jsonl so a client that
        died can find its jobs again.
        """
        for chunk_id, (index, log_name) in chunks.items():
            self._remember(chunk_id, JobRef(str(job_id), index, log_name))
        line = json.dumps({"job_id": str(job_id), "chunks": {str(c): v for c, v in chunks.items()}})
        with open(self.path / "jobs.jsonl", "a", opener=_private_opener) as file:
            file.write(line + "\n")

    def chunk_of_job(self, job_id: str, index: int | None) -> int | None:
        """The chunk a scheduler job (and array index) runs; None if not of this map."""
        return self._chunk_of_job.get((job_id, index))

    def recorded_chunks(self) -> list[int]:
        """The chunks this map's records say were ever submitted (by any client)."""
        return sorted(self._jobs_of_chunk)

    def jobs_of_chunk(self, chunk_id: int) -> list[JobRef]:
        return list(self._jobs_of_chunk.get(chunk_id, []))

    def log_tail(self, chunk_id: int, max_bytes: int = 4000) -> str:
        """The end of the newest log of a chunk: what the user needs to see on failure
        (the job's output, without the worker's events in it)."""
        for ref in reversed(self._jobs_of_chunk.get(chunk_id, [])):
            path = self.logs_dir / ref.log_name
            if path.exists():
                with open(path, "rb") as file:
                    file.seek(max(0, path.stat().st_size - max_bytes))
                    tail = file.read()
                output = b"".join(line for line in tail.splitlines(keepends=True)
                                  if MARK not in line and TASK_MARK not in line)
                return output.decode("utf-8", errors="replace")
        return ""

    def task_outputs(self) -> dict[int, bytes]:
        """What each chunk's tasks printed, archived in logs.zip or not (a running map,
        a client that died), by chunk id; chunks that printed nothing are left out."""
        logs = self.worker_logs()
        outputs = {chunk_id: output_of_attempts(blobs) for chunk_id, blobs in logs.items()}
        return {chunk_id: outputs[chunk_id] for chunk_id in sorted(outputs) if outputs[chunk_id]}

    def worker_logs(self) -> dict[int, list[bytes]]:
        """Each worker's logs, archived in logs.zip or not, oldest first, by worker id
        (the ids of ``record_jobs``)."""
        logs: dict[int, list[bytes]] = {}
        for name, blob in _read_zip(self.path / "logs.zip"):
            chunk, slash, _ = name.partition("/")
            if slash and chunk.isdigit():
                logs.setdefault(int(chunk), []).append(blob)
        for chunk_id in self._jobs_of_chunk:
            logs.setdefault(chunk_id, []).extend(self.logs_of([chunk_id]).values())
        return logs

    def archive_logs_of(self, chunk_id: int) -> None:
        """Keep the logs of a job that died (for the user) in logs.zip, then delete them."""
        self.archive_logs(self.logs_of([chunk_id]))

    def archive_claims(self) -> None:
        """The map succeeded: its claim files (one per chunk) go into logs.zip, as
        ``claims/<name>``, and their directories are removed, so a kept work_dir stays
        a handful of files. Only then: a map that may be resumed needs its claims."""
        members = {}
        for name in (CLAIMS, REQUEUE, RETRIES):
            directory = self.path / name
            for entry in sorted(os.listdir(directory)) if directory.is_dir() else []:
                if not entry.startswith("."):
                    members[f"{name}/{entry}"] = (directory / entry).read_bytes()
        self._append_to_zip("logs.zip", members)
        for name in (CLAIMS, REQUEUE, RETRIES):
            shutil.rmtree(self.path / name, ignore_errors=True)

    def archived_claims(self) -> dict[str, bytes]:
        """The claim files archive_claims put into logs.zip, by their names
        (``claims/<c>``, ``retries/<c>.<a>``, ``requeue/<c>.<a>``); empty if none."""
        try:
            with zipfile.ZipFile(self.path / "logs.zip") as archive:
                return {info.filename: archive.read(info) for info in archive.infolist()
                        if info.filename.partition("/")[0] in (CLAIMS, REQUEUE, RETRIES)}
        except (OSError, zipfile.BadZipFile):
            return {}

    def archive_log(self, member: str, blob: bytes) -> None:
        """Add a file of the map's own (its events journal) to logs.zip."""
        self._append_to_zip("logs.zip", {member: blob})

    def archived_logs(self, member: str) -> list[bytes]:
        """Every copy of ``member`` in logs.zip, oldest first (a resumed map adds one per
        client). Only that member is read, unless the archive has to be salvaged."""
        path = self.path / "logs.zip"
        try:
            with zipfile.ZipFile(path) as archive:
                return [archive.read(i) for i in archive.infolist() if i.filename == member]
        except FileNotFoundError:
            return []
        except (zipfile.BadZipFile, EOFError, OSError):  # a client appending, or killed
            return [blob for name, blob in _read_zip(path) if name == member]

    # ------------------------------------------------------------------ housekeeping
    def remove(self) -> None:
        """Delete the directory. It is renamed to a hidden name while our lock is still
        held, and only then released and deleted: a client claiming the same identity
        meanwhile either fails to lock it (and uses another name), or finds the
        directory gone and makes a fresh one; it never works in one being deleted."""
        self.close_archives()
        if self._lock_descriptor is None:  # not ours to remove
            return
        doomed: Path | None = self.path.with_name(f".removing-{self.path.name}-{_random_hex()}")
        with _CLAIMED_LOCK:  # no thread of this process claims it between the two steps
            try:
                os.rename(self.path, doomed)
            except FileNotFoundError:
                doomed = None
            os.close(self._lock_descriptor)
            self._lock_descriptor = None
            _CLAIMED.discard(str(self.path))
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)


def client_running(path: Path) -> bool | None:
    """Whether a client holds the map's lock (see WorkDir._claim); None if this file
    system can't tell. Only looks: an fcntl lock is never taken, not even for a moment
    (a client claiming the map then would think it busy), and a lock held by this very
    process is not released (closing any descriptor of a file drops the process's
    locks on it, so the file is not opened then)."""
    with _CLAIMED_LOCK:  # no thread of this process claims it while we look
        if any(os.path.realpath(held) == os.path.realpath(path) for held in _CLAIMED):
            return True
        try:
            descriptor = os.open(path / "client.lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError:
            return None
        try:
            return lock_held(descriptor)
        finally:
            os.close(descriptor)


def lock_held(descriptor: int) -> bool | None:
    """Ask the kernel (F_GETLK) whether another process holds a lock on the file."""
    if not sys.platform.startswith("linux"):
        return lock_held_by_trying(descriptor)
    request = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        answer = fcntl.fcntl(descriptor, fcntl.F_GETLK, request)
    except OSError:
        return None
    return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK


def lock_held_by_trying(descriptor: int) -> bool | None:
    """Elsewhere: take a shared lock and let it go at once."""
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        return True if error.errno in (errno.EACCES, errno.EAGAIN) else None
    fcntl.lockf(descriptor, fcntl.LOCK_UN)
    return False


def _can_create_in(directory: Path) -> bool:
    """os.access says yes to root everywhere; /proc and read-only mounts say no."""
    probe = directory / f".poolparty-probe-{_random_hex()}"
    try:
        os.mkdir(probe, 0o700)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


#: a member whose sample deflates to more than this share of its size is stored as it is
INCOMPRESSIBLE = 0.9
#: how much of a member is tried
COMPRESSION_SAMPLE = 1 << 16


def compression_for(blob: bytes) -> int:
    """Deflate a member only if it gets smaller: deflating a result of random-looking
    bytes (a float array, a compressed image) took most of the client's time gathering
    big results, and saved nothing. Logs and most pickles still shrink."""
    sample = blob[:COMPRESSION_SAMPLE]
    if len(sample) < 4096 or len(zlib.compress(sample, 1)) < INCOMPRESSIBLE * len(sample):
        return zipfile.ZIP_DEFLATED
    return zipfile.ZIP_STORED


def _read_zip(path: Path) -> Iterator[tuple[str, bytes]]:
    """Members of a zip archive; a damaged archive (client killed while appending) is
    salvaged member by member from its local headers instead of being lost."""
    if not path.exists():
        return
    check_private(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    except (zipfile.BadZipFile, EOFError, OSError):
        members = list(_salvage_zip(path.read_bytes()))
    yield from members


def _salvage_zip(data: bytes) -> Iterator[tuple[str, bytes]]:
    """Read complete members of a zip whose central directory is missing or torn.

    zipfile writes a member's local header with sizes and CRC 0 and rewrites it once the
    member is written: a header that still says 0 is a member the writer never finished,
    and the salvage stops there, unless another member's header follows at once (then it
    was a complete empty member). A member whose bytes do not inflate to the size and CRC
    its header names ends the salvage too."""
    header = struct.Struct("<4sHHHHHIIIHH")
    position = 0
    while position + header.size <= len(data):
        signature, _, flags, method, _, _, crc, size, full_size, name_length, extra_length = (
            header.unpack_from(data, position)
        )
        if signature != b"PK\x03\x04" or flags & 0x08:
            return
        name_start = position + header.size
        data_start = name_start + name_length + extra_length
        if size == 0 and data[data_start : data_start + 4] != b"PK\x03\x04":
            return
        raw = data[data_start : data_start + size]
        if len(raw) < size:
            return
        name = data[name_start : name_start + name_length].decode("utf-8", errors="replace")
        try:
            blob = zlib.decompress(raw, -15) if method == zipfile.ZIP_DEFLATED else raw
        except zlib.error:
            return
        if len(blob) != full_size or zlib.crc32(blob) != crc:
            return
        yield name, blob
        position = data_start + size
