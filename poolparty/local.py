"""The fallback where no scheduler exists: each chunk runs as a local worker process.

It goes through the same engine, work_dir and worker module as a cluster backend, so a
map behaves the same on a laptop as on SLURM (order, exceptions, cloudpickled
functions, files left behind); only the queue is a list in this process.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Sequence

from .escalation import OWN, Steps
from .scheduler import Scheduler, State, Submission
from .work_dir import WorkDir


class Local(Scheduler):
    """Runs at most ``max_workers`` chunks at once as child processes.

    A thread per slot waits on one child at a time, so a slot is refilled the moment
    a chunk ends, without waiting for the engine's next poll. The slot threads are
    daemons: an interpreter exiting (Ctrl-C) is never held up waiting for a chunk to
    end; the pool's exit hook cancels the chunks, which kills them.
    """

    name = "local"
    runs_elsewhere = False  # the client sees its children's files at once

    @classmethod
    def default_capacity(cls) -> int:
        """Every core of this machine."""
        return os.cpu_count() or 1

    def __init__(self, max_workers: int | None = None) -> None:
        self.default_max_running = max_workers or self.default_capacity()
        self._queue: queue.SimpleQueue[tuple[WorkDir, int] | None] = queue.SimpleQueue()
        self._slots: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._states: dict[tuple[str, int], State] = {}
        self._processes: dict[tuple[str, int], subprocess.Popen] = {}
        self._cancelled: set[tuple[str, int]] = set()

    def submit(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
               ) -> None:
        """Start a process per chunk (``steps``: nothing to raise, local processes have
        no limits)."""
        for chunk_id in chunk_ids:
            key = (work_dir.map_id, chunk_id)
            with self._lock:
                self._states[key] = State.PENDING
                self._cancelled.discard(key)
            self._queue.put((work_dir, chunk_id))
        self._start_slots()

    def _start_slots(self) -> None:
        with self._lock:
            while len(self._slots) < self.default_max_running:
                slot = threading.Thread(target=_serve, args=(weakref.ref(self), self._queue),
                                        daemon=True, name="poolparty-local")
                self._slots.append(slot)
                slot.start()

    def __del__(self) -> None:
        for _ in getattr(self, "_slots", ()):
            self._queue.put(None)

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        with self._lock:
            return {c: s for (m, c), s in self._states.items() if m == work_dir.map_id}

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        with self._lock:
            for chunk_id in chunk_ids:
                key = (work_dir.map_id, chunk_id)
                self._cancelled.add(key)
                self._states.pop(key, None)
                process = self._processes.pop(key, None)
                if process is not None:
                    self.stop_process(process)

    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        """One worker process per chunk, logging to a file numbered by its attempt (a
        local log's name needs no job id)."""
        launcher = self.launcher_for(work_dir)
        return [
            Submission(launcher[0] if launcher else "sh",
                       (*launcher, "/bin/sh", str(work_dir.script_path),
                        *self.worker_options(), str(chunk_id)),
                       {chunk_id: None},
                       f"{chunk_id}.local.{len(work_dir.jobs_of_chunk(chunk_id))}.log")
            for chunk_id in chunk_ids
        ]

    @staticmethod
    def stop_process(process: subprocess.Popen) -> None:
        """End a worker's process and everything it started."""
        _kill_group(process)

    def launcher_for(self, work_dir: WorkDir) -> tuple[str, ...]:
        """The command this map's workers' shells run under (none here: plain child
        processes; srun for the steps of an allocation)."""
        return ()

    def worker_options(self) -> tuple[str, ...]:
        """What a worker started now is told before its number (none here)."""
        return ()

    def close(self) -> None:
        with self._lock:
            self._cancelled.update(self._states)
            for process in self._processes.values():
                self.stop_process(process)
            slots, self._slots = self._slots, []
        for _ in slots:
            self._queue.put(None)
        for slot in slots:
            if slot is not threading.current_thread():
                slot.join()

    def _run(self, work_dir: WorkDir, chunk_id: int) -> None:
        key = (work_dir.map_id, chunk_id)
        with self._lock:
            if key in self._cancelled:
                return
            try:
                process = self._start(work_dir, chunk_id)
            except FileNotFoundError:
                if work_dir.path.exists():
                    raise
                # its map is over and its directory removed: nobody waits for this chunk
                self._states.pop(key, None)
                return
            self._states[key] = State.RUNNING
            self._processes[key] = process
        process.wait()
        with self._lock:
            if self._processes.get(key) is process:
                del self._processes[key]
                self._states.pop(key, None)

    def _start(self, work_dir: WorkDir, chunk_id: int) -> subprocess.Popen:
        (submission,) = self.plan(work_dir, [chunk_id])
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        log_fd = os.open(work_dir.logs_dir / submission.log_pattern, flags, 0o600)
        try:
            process = subprocess.Popen(
                submission.argv,
                stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            os.close(log_fd)
        job_id = f"local-{process.pid}"
        work_dir.record_jobs(job_id, submission.record(job_id))
        return process


def _serve(local: weakref.ref[Local], chunks: queue.SimpleQueue) -> None:
    """One slot thread: run the queued chunks one after the other until the Local is
    closed or collected (the thread holds it weakly, so an unused pool's threads go)."""
    while (item := chunks.get()) is not None:
        scheduler = local()
        if scheduler is None:
            return
        scheduler._run(*item)
        del scheduler


#: how long a cancel waits for a killed chunk's processes to be gone
KILL_WAIT_SECONDS = 5.0


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the job's whole process group (its shell and the worker under it), then wait,
    a few seconds at most, until none of them is left: when a map has been cancelled,
    its workers are gone, not merely signalled (a busy machine takes a moment to tear
    down a killed process, and the worker, orphaned by its shell, is init's to reap)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(process.pid):  # shell reaped
            return
        time.sleep(0.01)


def _group_alive(group: int) -> bool:
    """Whether a process of the group is still alive. A killed worker orphaned by its
    shell stays a zombie until init reaps it, which some containers' init does only
    every two seconds: a zombie has ended, and does not count."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc here: trust kill()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[2]) == group:  # state, ..., process group
            return True
    return False
