"""Directory locks: one writer per sweep directory (and per run directory).

``fcntl.flock`` is released by the kernel when the holder dies, SIGKILL included, so a
crashed sweep never leaves a stale lock behind. The lock file records the holder's PID
so that the refusal can name it.

    with DirLock(out / ".lock"):      # raises UserError naming the holder's PID
        ...
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from moelab.errors import UserError


class Locked(Exception):
    """The lock is held by another process (``pid`` may be None if it could not be read)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is locked by pid {pid if pid is not None else '?'}")
        self.path, self.pid = path, pid


def read_pid(path: str | Path) -> int | None:
    try:
        text = Path(path).read_text().strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError):
        return None


class FileLock:
    """An exclusive ``flock`` on ``path`` that records the holder's PID in the file.

    ``acquire(timeout=0)`` fails at once with :class:`Locked`; a positive timeout polls.
    The file descriptor is close-on-exec, so child processes do not inherit the lock.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0, poll: float = 0.2) -> "FileLock":
        assert self._fd is None, "lock already held by this object"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise Locked(self.path, read_pid(self.path)) from None
                time.sleep(poll)
        # We hold the lock: record our PID (truncate first so no stale digits remain).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no PID left behind once released
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FileLock":
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


class SweepLock(FileLock):
    """The lock on a sweep directory ``DIR/.lock``; a second sweep gets a one-line ``UserError``."""

    def __init__(self, out: str | Path):
        super().__init__(Path(out) / ".lock")
        self.out = Path(out)

    def acquire(self, timeout: float = 1.0, poll: float = 0.05) -> "SweepLock":
        # Not 0: ``lock_holder`` (``moelab status``) takes the lock shared for a few microseconds to
        # test it, and a sweep starting in that instant would be refused; a live sweep holds it
        # for good, so a second sweep is still refused, a second later.
        try:
            super().acquire(timeout, poll)
        except Locked as err:
            who = f"pid {err.pid}" if err.pid is not None else "another process"
            raise UserError(f"{self.out} is being written by another sweep ({who}); "
                            f"wait for it or stop it first") from None
        return self


def lock_holder(out: str | Path) -> int | None:
    """PID of the sweep holding ``out``'s lock, or None when no sweep holds it."""
    path = Path(out) / ".lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(path) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
