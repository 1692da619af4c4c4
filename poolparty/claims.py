"""Claims: workers pull a map's chunks from the work_dir, over the file system only.

Layout, in a map's directory (both made 0700 by the client with the map)::

    claims/<chunk>.<attempt>    made by the worker that runs that attempt of the chunk
                                (exclusive create): one JSON line naming it (worker id,
                                host, pid, the scheduler's job variables, claim time);
                                its mtime is the worker's heartbeat
    requeue/<chunk>.<attempt>   made by the client when the worker of attempt-1 was lost:
                                attempt is open for claiming (one JSON line: when, why)

A chunk's attempt 0 is open from the start, for chunks ``0 .. chunk_count-1``; names are
never reused and never deleted while the map runs, so chunks can be appended later.

Why these rules (a shared file system such as NFS, seen from many hosts):

* A claim is an exclusive create (``O_CREAT | O_EXCL``), not a rename: NFSv3 and v4 make
  an exclusive create idempotent (the server keeps the client's verifier), whereas a
  rename retransmitted after a lost reply reports a false failure (the first one moved
  the file). The worker then reads the claim back by name and runs the chunk only if it
  names this very worker.
* Directory listings are hints only: on NFS a listing can lag by a minute. A name a
  listing shows is a claim that exists (claims are never deleted), so skipping it is
  safe; a name it does not show yet is still caught by the exclusive create (EEXIST).
* Names are read by name only once a listing has shown them: a lookup of a name that
  does not exist yet is cached as missing by the client's kernel (up to a minute on
  NFS), and would hide the claim when it comes.

A claim ends with the chunk's result file (``results/<chunk>.pkl``); nothing is
released. A claim made but unreadable ends the worker (nobody else would run it), and
the client reopens it as a lost worker's. The client reads a claim by name only after a
listing showed it, and may still find it unreadable for a while (identity None):
claimed, owner not known yet, never lost.

The worker's side (``Claimer``, ``Claim``) imports only the standard library and
``poolparty.map_files`` (each job pays for its imports); the client's side is
``ClaimBoard``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Container, Iterable
from pathlib import Path

from .map_files import check_private

TYPE_CHECKING = False  # typing is not imported at run time: the worker imports this
if TYPE_CHECKING:
    from typing import Any

CLAIMS = "claims"
REQUEUE = "requeue"
#: the scheduler's variables that say which job (and array task) a worker is
JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                 "JOB_ID", "SGE_TASK_ID")

#: names in a directory (a hint: it may lag behind the file system); injectable for tests
Listing = Callable[[Path], Iterable[str]]
#: claim or requeue names by (chunk, attempt)
Taken = set[tuple[int, int]]


def list_names(directory: Path) -> list[str]:
    """The names in ``directory``: a hint, never proof that a name is missing."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def entry_name(chunk: int, attempt: int) -> str:
    return f"{chunk}.{attempt}"


def parse_entry(name: str) -> tuple[int, int] | None:
    """``(chunk, attempt)`` of a claim or requeue name; None for anything else (the
    temporary files a requeue is written under)."""
    chunk, dot, attempt = name.partition(".")
    if dot and chunk.isdigit() and attempt.isdigit():
        return int(chunk), int(attempt)
    return None


def parse_entries(names: Iterable[str]) -> Taken:
    return {entry for entry in map(parse_entry, names) if entry is not None}


def newest_attempts(names: Iterable[str]) -> dict[int, int]:
    """Each chunk named's newest attempt."""
    newest: dict[int, int] = {}
    for chunk, attempt in parse_entries(names):
        newest[chunk] = max(attempt, newest.get(chunk, attempt))
    return newest


def worker_identity(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Who this worker is: a random id (unique across hosts and pid reuse), where it
    runs, and which scheduler job it is, for the client to tell whose claim was lost."""
    environ = os.environ if environ is None else environ
    return {
        "worker": os.urandom(8).hex(),
        "host": os.uname().nodename,
        "pid": os.getpid(),
        "job": {name: environ[name] for name in JOB_VARIABLES if name in environ},
    }


def read_identity(path: Path) -> dict[str, Any] | None:
    """The identity in a claim file; None when it can't be read (yet) or is torn."""
    return read_claim(path)[0]


def read_claim(path: Path) -> tuple[dict[str, Any] | None, float | None]:
    """A claim file's identity and mtime (its heartbeat), each None when it can't be
    read (yet) or is torn. The mtime is taken from the open file: on NFS an open
    revalidates the attributes (close-to-open), which a stat of the path may not for
    up to a minute (actimeo)."""
    try:
        with open(path, "rb") as file:
            mtime: float | None = os.fstat(file.fileno()).st_mtime
            identity = json.loads(file.read())
    except OSError:
        return None, None
    except ValueError:
        return None, mtime
    return (identity if isinstance(identity, dict) else None), mtime


def _make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 whatever the umask; an existing one is kept."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)


class Claim:
    """One attempt at one chunk, held by this worker until its result is written."""

    def __init__(self, path: Path, chunk: int, attempt: int, identity: dict[str, Any]) -> None:
        self.path = path
        self.chunk = chunk
        self.attempt = attempt
        self.identity = identity

    def touch(self) -> None:
        """The heartbeat: set the claim's mtime to now (the file server's clock on NFS),
        which the client reads as the claim's age."""
        os.utime(self.path)

    def __repr__(self) -> str:
        return f"Claim(chunk={self.chunk}, attempt={self.attempt}, path={str(self.path)!r})"


class Claimer:
    """A worker's side: claims chunks one at a time until none is left.

    The worker walks chunk ids from a cursor (the one after its last claim), so without
    contention it makes one create per claim. When a create finds the chunk taken, it
    lists ``claims/`` once and skips the names shown there (under contention, about two
    creates and a listing per claim). Once the cursor passed the last chunk it looks in
    ``requeue/`` for attempts reopened by the client.
    """

    def __init__(self, map_dir: str | os.PathLike, chunk_count: int,
                 environ: dict[str, str] | None = None, listing: Listing = list_names) -> None:
        self.path = Path(map_dir)
        self.claims_dir = self.path / CLAIMS
        self.requeue_dir = self.path / REQUEUE
        self.chunk_count = chunk_count
        self.identity = worker_identity(environ)
        self.cursor = 0
        self._listing = listing
        self._taken: Taken = set()  # claims a listing showed: they exist
        self._checked = False

    def claim_next(self) -> Claim | None:
        """The next chunk this worker runs, claimed; None when no work is open."""
        if not self._checked:
            check_private(self.claims_dir)
            check_private(self.requeue_dir)
            self._checked = True
        while self.cursor < self.chunk_count:
            chunk, self.cursor = self.cursor, self.cursor + 1
            claim = self._claim_unless_taken(chunk, 0)
            if claim is not None:
                return claim
        return self._claim_requeued()

    def _claim_requeued(self) -> Claim | None:
        """An attempt the client reopened: the newest one per chunk in a listing of
        ``requeue/`` (an older one was claimed before it was requeued)."""
        newest = newest_attempts(self._listing(self.requeue_dir))
        for chunk, attempt in sorted(newest.items()):
            claim = self._claim_unless_taken(chunk, attempt)
            if claim is not None:
                return claim
        return None

    def _claim_unless_taken(self, chunk: int, attempt: int) -> Claim | None:
        if (chunk, attempt) in self._taken:
            return None
        claim = self.try_claim(chunk, attempt)
        if claim is None:  # others are ahead: learn at once what they took
            self._taken |= parse_entries(self._listing(self.claims_dir))
        self._taken.add((chunk, attempt))  # ours or theirs: never tried again
        return claim

    def try_claim(self, chunk: int, attempt: int) -> Claim | None:
        """Claim this attempt of this chunk by an exclusive create; None when another
        worker has it (or the claim read back names another worker). A claim made but
        unreadable raises OSError: the worker ends, and the client reopens the chunk as
        that of a lost worker."""
        path = self.claims_dir / entry_name(chunk, attempt)
        identity = dict(self.identity, time=time.time())
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return None
        # No fsync: on NFS close() writes the data back and commits it already
        # (close-to-open), and on a local disk it only guards against the machine
        # crashing, which ends its workers too; it cost ~1 ms a claim here, 10x the rest.
        with os.fdopen(descriptor, "wb") as file:
            file.write(json.dumps(identity).encode() + b"\n")
        found = read_identity(path)
        if found is None:  # nobody would ever run it: end, the client requeues it
            raise OSError(f"the claim {path} this worker made can't be read back")
        if found.get("worker") != identity["worker"]:
            return None
        return Claim(path, chunk, attempt, identity)


class ClaimInfo:
    """What the client sees of one claim: identity None when the file can't be read yet
    (a listing showed it before the name is visible here)."""

    def __init__(self, chunk: int, attempt: int, identity: dict[str, Any] | None,
                 age: float | None) -> None:
        self.chunk = chunk
        self.attempt = attempt
        self.identity = identity
        self.age = age

    def __repr__(self) -> str:
        return (f"ClaimInfo(chunk={self.chunk}, attempt={self.attempt}, "
                f"identity={self.identity!r}, age={self.age!r})")


class ClaimBoard:
    """The client's side: who holds what, and reopening the chunks of lost workers.

    Everything here starts from a listing, so it is as fresh as the file system's
    listings (a hint); it never decides who runs a chunk, the workers' exclusive
    creates do.
    """

    def __init__(self, map_dir: str | os.PathLike, chunk_count: int,
                 listing: Listing = list_names) -> None:
        self.path = Path(map_dir)
        self.claims_dir = self.path / CLAIMS
        self.requeue_dir = self.path / REQUEUE
        self.chunk_count = chunk_count
        self._listing = listing

    def create(self) -> None:
        """Make ``claims/`` and ``requeue/``, private (0700), when the map is written."""
        _make_private_dir(self.claims_dir)
        _make_private_dir(self.requeue_dir)

    def claims(self) -> dict[int, ClaimInfo]:
        """Each claimed chunk's newest claim."""
        newest = newest_attempts(self._listing(self.claims_dir))
        return {chunk: self._info(chunk, attempt) for chunk, attempt in sorted(newest.items())}

    def claims_of(self, chunk: int) -> list[ClaimInfo]:
        """Every claim of one chunk, oldest attempt first."""
        attempts = sorted(attempt for claimed, attempt in
                          parse_entries(self._listing(self.claims_dir)) if claimed == chunk)
        return [self._info(chunk, attempt) for attempt in attempts]

    def _info(self, chunk: int, attempt: int) -> ClaimInfo:
        """Read a claim that a listing showed (never a name it did not show: see the
        module's docstring). Its age is this host's clock against the claim's mtime: a
        heartbeat timeout must allow for the clocks' skew, and for an attribute cache
        that open does not revalidate (FUSE's attr_timeout; NFS revalidates)."""
        identity, mtime = read_claim(self.claims_dir / entry_name(chunk, attempt))
        age = None if mtime is None else time.time() - mtime
        return ClaimInfo(chunk, attempt, identity, age)

    def requeues(self) -> dict[int, int]:
        """Each requeued chunk's newest reopened attempt."""
        return newest_attempts(self._listing(self.requeue_dir))

    def attempts(self, chunk: int) -> int:
        """How many attempts the chunk was given: 1, plus one per requeue."""
        return self.requeues().get(chunk, 0) + 1

    def requeue(self, chunk: int, attempt: int, reason: str = "") -> None:
        """Open ``attempt`` of ``chunk`` for the workers (its worker of ``attempt - 1``
        was lost). Written whole under a temporary name and linked into place: a link
        never replaces a file, so a name is never reused (FileExistsError); whether the
        link was made is told by the temporary file's link count, not by the reply."""
        if attempt < 1:
            raise ValueError(f"attempt {attempt}: attempt 0 of every chunk is open already")
        path = self.requeue_dir / entry_name(chunk, attempt)
        temporary = self.requeue_dir / f".{path.name}.{os.urandom(4).hex()}.tmp"
        line = json.dumps({"chunk": chunk, "attempt": attempt, "time": time.time(),
                           "reason": reason})
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(line.encode() + b"\n")
            try:
                os.link(temporary, path)
            except FileExistsError:  # NFS: a link retransmitted after a lost reply
                if os.stat(temporary).st_nlink != 2:  # says EEXIST though it was made
                    raise
        finally:
            os.unlink(temporary)

    def unclaimed(self, done: Container[int] = ()) -> list[int]:
        """Chunks whose open attempt nobody claimed yet (as far as the listings show:
        a chunk may be claimed meanwhile), leaving out those in ``done``."""
        claimed = parse_entries(self._listing(self.claims_dir))
        requeued = self.requeues()
        return [chunk for chunk in range(self.chunk_count) if chunk not in done
                and (chunk, requeued.get(chunk, 0)) not in claimed]
