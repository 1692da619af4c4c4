"""Claims: workers pull a map's tasks from the work_dir, over the file system only.

Layout, in a map's directory (all three made 0700 by the client with the map)::

    claims/<c>                  claim number c = 0, 1, 2, ... of the chain: tasks
                                [start, stop) with start = the stop of claim c-1 (0 for
                                claim 0); one JSON line: start, stop, attempt 0, who
                                claimed it (worker id, host, pid, the scheduler's job
                                variables), claim time; its mtime is meant as the
                                heartbeat of hand-started workers (issue 15): nothing
                                touches or reads it yet
    claims/.<worker>.<c>.tmp    the temporary file a worker links as claims/<c>
    requeue/<c>.<attempt>       made by the client when the worker of claim c's previous
                                attempt was lost (attempt >= 1): one JSON line with the
                                claim's range, when and why
    retries/<c>.<attempt>       made by the worker that runs that attempt: as claims/<c>
    results/<c>.pkl             claim c's result, as for any chunk (chunk id = c)

The claimer of claim c decides its size (``chunking.claim_size``: from the durations it
has measured), so the chunks are cut at claim time; a retry keeps the original range.
Names are never reused and never deleted while the map runs.

Why these rules (a shared file system such as NFS, seen from many hosts):

* A claim is made whole: written to a temporary file only this worker uses, then
  linked into place (a link fails with EEXIST when the name is taken, and never
  replaces it). A claim is never empty, so every worker can read a stop and follow the
  chain; an exclusive create followed by a write would leave an empty claim, and a
  broken chain, if its worker died in between.
* A link retransmitted after a lost reply can report EEXIST to its winner: after
  success or EEXIST the worker reads the claim back, and the worker id in it decides.
  A claim this worker linked but can't read back ends the worker (OSError): nobody
  else would run it, and the client reopens it as a lost worker's.
* Directory listings are hints only: on NFS a listing can lag by a minute. A worker
  walks the chain by name (claim c taken: read its stop, try c+1), and a listing only
  lets it jump ahead to the highest claim listed. Requeued claims go first: before
  extending the chain a worker lists ``requeue/`` when the directory's mtime changed
  (and always once the chain covers every task).
* The client reads a name only once a listing has shown it: a lookup of a name that
  does not exist yet is cached as missing by the client's kernel (up to a minute on
  NFS) and would hide the claim when it comes. A listed claim it can't read yet has
  identity None: claimed, owner not known yet, never lost.

No fsync per claim: on NFS close() writes the data back and commits it already
(close-to-open), and on a local disk it only guards against the machine crashing,
which ends its workers too; it cost ~1 ms a claim here, 10x the rest.

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

from .escalation import OWN, Steps
from .map_files import check_private

TYPE_CHECKING = False  # typing is not imported at run time: the worker imports this
if TYPE_CHECKING:
    from typing import Any

CLAIMS = "claims"
REQUEUE = "requeue"
RETRIES = "retries"
#: the scheduler's variables that say which job (and array task) a worker is
JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                 "JOB_ID", "SGE_TASK_ID")
#: what a claim file holds besides its claimer's identity
RANGE_KEYS = ("start", "stop", "attempt")
#: how long a worker waits for a claim that another worker linked to become readable
#: here (a kernel that cached the name as missing shows it when that entry expires)
TAKEN_READ_SECONDS = 120.0
#: ``requeue/`` changed this recently may change again within the same timestamp tick
#: (a jiffy on Linux), which its mtime would not show: a worker lists it again (a file
#: server's clock ahead of the worker's makes it list every time: a listing, not a risk)
RECENT_SECONDS = 1.0

#: names in a directory (a hint: it may lag behind the file system); injectable for tests
Listing = Callable[[Path], Iterable[str]]
#: requeue or retry names by (claim number, attempt)
Taken = set[tuple[int, int]]


def list_names(directory: Path) -> list[str]:
    """The names in ``directory``: a hint, never proof that a name is missing."""
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def claim_numbers(names: Iterable[str]) -> set[int]:
    """The claim numbers among names in ``claims/`` (not the temporary files)."""
    return {int(name) for name in names if name.isdigit()}


def entry_name(number: int, attempt: int) -> str:
    return f"{number}.{attempt}"


def parse_entry(name: str) -> tuple[int, int] | None:
    """``(claim number, attempt)`` of a requeue or retry name; None for anything else
    (the temporary files they are written under)."""
    number, dot, attempt = name.partition(".")
    if dot and number.isdigit() and attempt.isdigit():
        return int(number), int(attempt)
    return None


def parse_entries(names: Iterable[str]) -> Taken:
    return {entry for entry in map(parse_entry, names) if entry is not None}


def newest_attempts(names: Iterable[str]) -> dict[int, int]:
    """Each claim number named's newest attempt."""
    newest: dict[int, int] = {}
    for number, attempt in parse_entries(names):
        newest[number] = max(attempt, newest.get(number, attempt))
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


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON object in a claim or requeue file; None when it can't be read (yet)."""
    return read_claim(path)[0]


def read_identity(path: Path) -> dict[str, Any] | None:
    """Who a claim file names (its record without the range); None when unreadable."""
    record = read_record(path)
    return None if record is None else identity_of(record)


def identity_of(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in RANGE_KEYS}


def read_claim(path: Path) -> tuple[dict[str, Any] | None, float | None]:
    """A claim file's record and mtime (its heartbeat), each None when it can't be
    read (yet). The mtime is taken from the open file: on NFS an open revalidates the
    attributes (close-to-open), which a stat of the path may not for up to a minute
    (actimeo)."""
    try:
        with open(path, "rb") as file:
            mtime: float | None = os.fstat(file.fileno()).st_mtime
            record = json.loads(file.read())
    except OSError:
        return None, None
    except ValueError:
        return None, mtime
    return (record if isinstance(record, dict) else None), mtime


def link_whole(path: Path, line: str, temporary: Path) -> bool:
    """Make ``path`` appear with ``line`` in it, whole: written under ``temporary`` (a
    name nobody else uses), then linked. False when ``path`` was taken. A link
    retransmitted after a lost reply says EEXIST though it was made: the temporary
    file's link count tells (the caller still reads ``path`` back to be sure)."""
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(line.encode() + b"\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            return os.stat(temporary).st_nlink == 2
        return True
    finally:
        os.unlink(temporary)


def _make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700 whatever the umask; an existing one is kept."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    os.chmod(path, 0o700)


class ClaimRecord:
    """The fields every view of a claim has; a plain class, since the worker imports
    this module and ``dataclasses`` would add to every job's start."""

    def __init__(self, number: int, attempt: int, start: int | None, stop: int | None,
                 **more: Any) -> None:
        self.number = number
        self.attempt = attempt
        self.start = start
        self.stop = stop
        vars(self).update(more)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Claim(ClaimRecord):
    """One attempt at one claim's tasks, held by this worker until its result is
    written (``results/<number>.pkl``)."""

    path: Path
    identity: dict[str, Any]

    def __init__(self, path: Path, number: int, attempt: int, start: int, stop: int,
                 identity: dict[str, Any]) -> None:
        super().__init__(number, attempt, start, stop, identity=identity, path=path)

    def touch(self) -> None:
        """The heartbeat: set the claim's mtime to now (the file server's clock on NFS),
        which ClaimInfo.age reads. Not called yet: workers the scheduler lists need none
        (issue 15's hand-started workers will)."""
        os.utime(self.path)


class Claimer:
    """A worker's side: claims tasks, as many at a time as it asks for, until none is
    left.

    The worker follows the chain from the claim after the last one it knows, so
    without contention it makes one link per claim. A claim found taken tells the stop
    to continue from; then a listing of ``claims/`` lets it jump to the highest claim
    listed. Reopened claims are taken before the chain is extended.
    """

    def __init__(self, map_dir: str | os.PathLike, num_tasks: int,
                 environ: dict[str, str] | None = None, listing: Listing = list_names,
                 steps: Steps = OWN) -> None:
        """``steps``: how often this worker's time and memory were raised; it takes
        only the reopened claims that need no more (poolparty.escalation)."""
        self.path = Path(map_dir)
        self.steps = steps
        self.claims_dir = self.path / CLAIMS
        self.requeue_dir = self.path / REQUEUE
        self.retries_dir = self.path / RETRIES
        self.num_tasks = num_tasks
        self.identity = worker_identity(environ)
        self.next_number = 0  # the first claim of the chain not known to be taken
        self.next_start = 0  # its start: the stop of the claim before it
        self._listing = listing
        self._tried: Taken = set()  # retries linked by this worker, won or lost
        self._requeue_mtime: int | None = None
        self._checked = False

    def claim_next(self, size_for: Callable[[int], int]) -> Claim | None:
        """The next tasks this worker runs, claimed; None when no work is open, or when
        ``size_for(remaining)``, how many of the remaining tasks to take, says none
        (the job's time limit is near)."""
        if not self._checked:
            if not self.claims_dir.exists():  # the map ended: its claims were archived
                return None
            for directory in (self.claims_dir, self.requeue_dir, self.retries_dir):
                check_private(directory)
            self._checked = True
        if self.next_start < self.num_tasks and self._requeue_changed():
            retry = self._claim_requeued()
            if retry is not None:
                return retry
        while self.next_start < self.num_tasks:
            size = size_for(self.num_tasks - self.next_start)
            if size < 1:  # not even a block fits in the time left: leave it to others
                return None
            claim = self._extend_chain(size)
            if claim is not None:
                return claim
        return self._claim_requeued()

    def _requeue_changed(self) -> bool:
        """Whether ``requeue/`` may hold something new since it was last looked at: a
        stat is cheaper than a listing (a hint too; the end of the chain lists anyway)."""
        try:
            mtime: int | None = os.stat(self.requeue_dir).st_mtime_ns
        except OSError:
            mtime = None
        changed = (mtime is None or mtime != self._requeue_mtime
                   or time.time() - mtime / 1e9 < RECENT_SECONDS)
        self._requeue_mtime = mtime
        return changed

    def _extend_chain(self, size: int) -> Claim | None:
        """Link the next claim of the chain, ``size`` tasks (fewer at the end): this
        worker's, or another's found there (then move past it, and past any later claim
        a listing shows)."""
        number, start = self.next_number, self.next_start
        stop = start + min(self.num_tasks - start, size)
        path = self.claims_dir / str(number)
        found = self._link_claim(path, {"start": start, "stop": stop, "attempt": 0})
        if found is None:
            found = self._wait_for(path)
            if found is None:  # jumped past it
                return None
        self.next_number, self.next_start = number + 1, found["stop"]
        claim = self._claim_if_own(path, number, found)
        if claim is None:
            self._jump_ahead()
        return claim

    def _jump_ahead(self) -> bool:
        """Others are ahead: continue after the highest claim a listing shows (a name
        never looked up here, so readable), not one claim at a time. Whether it did."""
        highest = max(claim_numbers(self._listing(self.claims_dir)), default=-1)
        if highest < self.next_number:
            return False
        record = read_record(self.claims_dir / str(highest))
        if record is None:
            return False
        self.next_number, self.next_start = highest + 1, record["stop"]
        return True

    def _wait_for(self, path: Path) -> dict[str, Any] | None:
        """A claim another worker linked that can't be read here: this kernel still
        caches its name as missing (FUSE before Linux 6.x dropped such an entry on
        EEXIST), and shows it when that entry expires. Until then, a later claim that a
        listing shows lets the worker jump past it (None)."""
        deadline, delay = time.monotonic() + TAKEN_READ_SECONDS, 0.01
        while (found := read_record(path)) is None:
            if self._jump_ahead():
                return None
            if time.monotonic() > deadline:
                raise OSError(f"the claim {path} exists but can't be read")
            time.sleep(delay)
            delay = min(1.0, 2 * delay)
        return found

    def _claim_requeued(self) -> Claim | None:
        """A claim the client reopened: the newest attempt per claim in a listing of
        ``requeue/`` (an older one was claimed before it was requeued), with the
        original range. One reopened for a worker with more time or memory than this
        one's is left to such a worker; those that need most go first."""
        newest = newest_attempts(self._listing(self.requeue_dir))
        candidates = []
        for number, attempt in sorted(newest.items()):
            if (number, attempt) in self._tried:
                continue
            requeued = read_record(self.requeue_dir / entry_name(number, attempt))
            if requeued is None:  # listed but not readable yet: next time
                continue
            needs = Steps.parse(requeued.get("needs"))
            if self.steps.covers(needs):
                candidates.append((-needs.time - needs.memory, number, attempt, requeued))
        for _, number, attempt, requeued in sorted(candidates, key=lambda c: c[:3]):
            self._tried.add((number, attempt))
            path = self.retries_dir / entry_name(number, attempt)
            found = self._link_claim(path, {"start": requeued["start"],
                                            "stop": requeued["stop"], "attempt": attempt})
            claim = None if found is None else self._claim_if_own(path, number, found)
            if claim is not None:
                return claim
        return None

    def _link_claim(self, path: Path, claim_range: dict[str, int]) -> dict[str, Any] | None:
        """Try to make ``path`` this worker's claim of ``claim_range``; the record it
        holds afterwards, this worker's or the one that was there (None: another's,
        not readable here yet)."""
        record = dict(claim_range, **self.identity, time=time.time())
        temporary = path.with_name(f".{self.identity['worker']}.{path.name}.tmp")
        if not link_whole(path, json.dumps(record), temporary):
            return read_record(path)
        found = read_record(path)
        if found is None:  # nobody would ever run it: end, the client requeues it
            raise OSError(f"the claim {path} this worker made can't be read back")
        return found

    def _claim_if_own(self, path: Path, number: int, found: dict[str, Any]) -> Claim | None:
        if found.get("worker") != self.identity["worker"]:
            return None
        return Claim(path, number, found["attempt"], found["start"], found["stop"],
                     identity_of(found))


class ClaimInfo(ClaimRecord):
    """What the client sees of one claim: identity (and the range) None when the file
    can't be read yet (a listing showed it before the name is visible here)."""

    identity: dict[str, Any] | None
    age: float | None

    def __init__(self, number: int, attempt: int, start: int | None, stop: int | None,
                 identity: dict[str, Any] | None, age: float | None) -> None:
        super().__init__(number, attempt, start, stop, identity=identity, age=age)


class ClaimBoard:
    """The client's side: who holds what, how far the chain covers the tasks, and
    reopening the claims of lost workers.

    Everything here starts from a listing, so it is as fresh as the file system's
    listings (a hint); it never decides who runs a claim, the workers' links do.
    """

    def __init__(self, map_dir: str | os.PathLike, num_tasks: int,
                 listing: Listing = list_names) -> None:
        self.path = Path(map_dir)
        self.claims_dir = self.path / CLAIMS
        self.requeue_dir = self.path / REQUEUE
        self.retries_dir = self.path / RETRIES
        self.num_tasks = num_tasks
        self._listing = listing
        self._ranges: dict[int, tuple[int, int]] = {}  # claims read: they never change
        self._chain_next = 0  # the chain read so far: claims 0 .. _chain_next - 1,
        self._covered = 0  # covering tasks [0, _covered)

    def create(self) -> None:
        """Make ``claims/``, ``requeue/`` and ``retries/``, private (0700), when the map
        is written."""
        for directory in (self.claims_dir, self.requeue_dir, self.retries_dir):
            _make_private_dir(directory)

    def claims(self) -> dict[int, ClaimInfo]:
        """Each claim's newest attempt claimed (a retry once one is listed)."""
        newest = dict.fromkeys(claim_numbers(self._listing(self.claims_dir)), 0)
        newest.update(newest_attempts(self._listing(self.retries_dir)))
        return {number: self._info(number, attempt) for number, attempt in sorted(newest.items())}

    def listed(self) -> set[tuple[int, int]]:
        """Every ``(claim number, attempt)`` claimed, as far as the listings show."""
        entries = {(number, 0) for number in claim_numbers(self._listing(self.claims_dir))}
        return entries | parse_entries(self._listing(self.retries_dir))

    def read(self, number: int, attempt: int) -> ClaimInfo:
        """One claimed attempt that ``listed`` showed (never a name it did not show)."""
        return self._info(number, attempt)

    def claims_of(self, number: int) -> list[ClaimInfo]:
        """Every attempt claimed of one claim, oldest first."""
        attempts = [0] if number in claim_numbers(self._listing(self.claims_dir)) else []
        attempts += sorted(attempt for claimed, attempt in
                           parse_entries(self._listing(self.retries_dir)) if claimed == number)
        return [self._info(number, attempt) for attempt in attempts]

    def _path(self, number: int, attempt: int) -> Path:
        if attempt == 0:
            return self.claims_dir / str(number)
        return self.retries_dir / entry_name(number, attempt)

    def _info(self, number: int, attempt: int) -> ClaimInfo:
        """Read a claim that a listing showed (never a name it did not show: see the
        module's docstring). Its age is this host's clock against the claim's mtime: a
        heartbeat timeout must allow for the clocks' skew, and for an attribute cache
        that open does not revalidate (FUSE's attr_timeout; NFS revalidates)."""
        record, mtime = read_claim(self._path(number, attempt))
        age = None if mtime is None else time.time() - mtime
        if record is None:
            return ClaimInfo(number, attempt, None, None, None, age)
        if attempt == 0:
            self._ranges[number] = (record["start"], record["stop"])
        return ClaimInfo(number, attempt, record["start"], record["stop"],
                         identity_of(record), age)

    def covered(self) -> range:
        """The task positions claimed so far: the chain from claim 0 as far as the
        listing shows it and its claims can be read here."""
        listed = claim_numbers(self._listing(self.claims_dir))
        while self._covered < self.num_tasks and self._chain_next in listed:
            claim_range = self._range(self._chain_next)
            if claim_range is None:
                break
            self._covered, self._chain_next = claim_range[1], self._chain_next + 1
        return range(0, self._covered)

    def all_covered(self) -> bool:
        """Whether every task was claimed once (no first-attempt work is left)."""
        return self.covered().stop >= self.num_tasks

    def _range(self, number: int) -> tuple[int, int] | None:
        """Claim ``number``'s range, read once (call only for a listed claim)."""
        if number not in self._ranges:
            record = read_record(self.claims_dir / str(number))
            if record is None:
                return None
            self._ranges[number] = (record["start"], record["stop"])
        return self._ranges[number]

    def requeues(self) -> dict[int, int]:
        """Each requeued claim's newest reopened attempt."""
        return newest_attempts(self._listing(self.requeue_dir))

    def attempts(self, number: int) -> int:
        """How many attempts the claim was given: 1, plus one per requeue."""
        return self.requeues().get(number, 0) + 1

    def requeue(self, number: int, attempt: int, reason: str = "", needs: Steps = OWN
                ) -> None:
        """Open ``attempt`` of claim ``number`` (with its original range) for the
        workers: its worker of ``attempt - 1`` was lost. A name is never reused
        (FileExistsError). The claim must have been listed and read (claims()).
        ``needs``: only a worker raised so often may take it (poolparty.escalation)."""
        if attempt < 1:
            raise ValueError(f"attempt {attempt}: attempt 0 is the claim itself")
        if number not in self._ranges and self._range_if_listed(number) is None:
            raise OSError(f"claim {number} is not listed or can't be read yet")
        start, stop = self._ranges[number]
        path = self.requeue_dir / entry_name(number, attempt)
        line = json.dumps({"claim": number, "attempt": attempt, "start": start, "stop": stop,
                           "time": time.time(), "reason": reason,
                           "needs": [needs.time, needs.memory]})
        temporary = self.requeue_dir / f".{path.name}.{os.urandom(4).hex()}.tmp"
        if not link_whole(path, line, temporary):
            raise FileExistsError(f"{path} exists: a requeue name is never reused")

    def _range_if_listed(self, number: int) -> tuple[int, int] | None:
        if number not in claim_numbers(self._listing(self.claims_dir)):
            return None
        return self._range(number)

    def unclaimed_requeues(self, done: Container[int] = ()) -> list[int]:
        """Reopened claims whose newest attempt nobody claimed yet (as far as the
        listings show: one may be claimed meanwhile), leaving out those in ``done``."""
        claimed = parse_entries(self._listing(self.retries_dir))
        return [number for number, attempt in sorted(self.requeues().items())
                if number not in done and (number, attempt) not in claimed]
