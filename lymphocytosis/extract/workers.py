"""Several extraction processes sharing one output: who embeds which patient, and who writes the final file.

The same `extract.py` command may run N times at once (one per GPU, or the tasks of a Slurm array on a shared
filesystem). Each patient is claimed by creating `<out>.parts/<ID>.claim` exclusively (O_EXCL, which holds on
local filesystems and NFSv3+), holding the claimant's worker id (host and pid). Each worker keeps a heartbeat
file fresh from a background thread; a claim whose worker is gone -- a dead pid on this host, or a heartbeat
older than HEARTBEAT_TIMEOUT (another host, or a frozen process) -- is taken over: renamed away atomically (only one taker
wins) and claimed anew. A part written twice (a race at takeover) is harmless: parts are written atomically
and are the same bytes whoever computes them. When every patient is done, one worker takes the assembly
claim the same way and writes the final file; the others wait for it and exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
def heartbeat_timeout() -> float:
    """Seconds of silence after which another host's worker counts as stopped (LYMPHOCYTOSIS_HEARTBEAT_TIMEOUT)."""
    try:
        return max(3 * HEARTBEAT_SECONDS, float(os.environ.get("LYMPHOCYTOSIS_HEARTBEAT_TIMEOUT", "60")))
    except ValueError:
        return 60.0


HEARTBEAT_TIMEOUT = heartbeat_timeout()
ASSEMBLY = "_assembly"  # the claim on writing the final file


def pid_namespace() -> str:
    """This process's PID namespace (`/proc/self/ns/pid`'s inode), "?" where it cannot be known: two containers on
    one host share its name but not their PIDs, so a pid means the same process only in the same namespace."""
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"
    return "".join(ch for ch in link if ch.isdigit()) or "?"


def local_identity() -> str:
    return f"{socket.gethostname()}@{pid_namespace()}"


def worker_id() -> str:
    return f"{local_identity()}:{os.getpid()}"


def alive(worker: str, heartbeats: Path) -> bool:
    """Is the worker that wrote this id still working? Not if its pid is gone -- asked only of a worker on this
    host AND in this PID namespace, where the pid is known to mean the same process -- nor if its heartbeat is
    older than HEARTBEAT_TIMEOUT (a worker on another host or in another container, or a frozen one)."""
    host, _, pid = worker.rpartition(":")
    if host == local_identity() and not host.endswith("@?") and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's live process
    try:
        return time.time() - (heartbeats / safe_name(worker)).stat().st_mtime < HEARTBEAT_TIMEOUT
    except FileNotFoundError:
        return False


def safe_name(worker: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in worker)


class Heartbeat:
    """Touches `<parts>/workers/<worker>` every few seconds while the worker runs."""

    def __init__(self, folder: Path, worker: str):
        self.path = Path(folder) / "workers" / safe_name(worker)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="heartbeat", daemon=True)

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                self.path.touch()

    def __enter__(self) -> Heartbeat:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=2 * HEARTBEAT_SECONDS)
        self.path.unlink(missing_ok=True)


class Claims:
    """Exclusive claims on patients (and on the assembly) inside a parts folder; picklable, so DataLoader worker
    processes can claim on behalf of their worker."""

    def __init__(self, folder: Path, worker: str):
        self.folder = Path(folder)
        self.worker = worker

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.claim"

    def holder(self, name: str) -> str | None:
        try:
            return self.path(name).read_text().strip() or None
        except FileNotFoundError:
            return None

    def take(self, name: str) -> bool:
        """Claim `name` if nobody holds it, or if its holder is gone; True when this worker now holds it. The claim
        is written whole to a temporary file, then linked into place (exclusive, like O_EXCL): a claim file is
        never seen empty or half-written."""
        path = self.path(name)
        tmp = path.with_name(f".{path.name}.{safe_name(self.worker)}.tmp")
        try:
            tmp.write_text(self.worker)
            os.link(tmp, path)
        except FileExistsError:
            return self.take_over(name)
        except FileNotFoundError:  # the parts folder is gone: another worker has written the final file
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def take_over(self, name: str) -> bool:
        path = self.path(name)
        try:
            before = path.stat()
            holder = path.read_text().strip()
        except FileNotFoundError:
            return self.take(name)
        if holder == self.worker:
            return True
        if not holder and time.time() - before.st_mtime < HEARTBEAT_TIMEOUT:
            return False  # written by an older version, or being written: judged once it is old
        if holder and alive(holder, self.folder / "workers"):
            return False
        stale = path.with_name(f"{path.name}.stale-{safe_name(self.worker)}")
        try:
            os.rename(path, stale)  # atomic: of several takers, one renames the stale claim away
        except FileNotFoundError:
            return False
        if os.stat(stale).st_ino != before.st_ino:  # we moved a fresh claim made in between: give it back
            with contextlib.suppress(FileExistsError, FileNotFoundError):
                os.link(stale, path)
            stale.unlink(missing_ok=True)
            return False
        stale.unlink(missing_ok=True)
        log.info("taking over %s from %s, which stopped", name, holder)
        return self.take(name)

    def release(self, name: str) -> None:
        if self.holder(name) == self.worker:
            self.path(name).unlink(missing_ok=True)

    def held_elsewhere(self, name: str) -> bool:
        holder = self.holder(name)
        return holder is not None and holder != self.worker and alive(holder, self.folder / "workers")
