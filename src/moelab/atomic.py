"""Atomic file writes: write to a temp sibling, fsync, rename into place.

A reader (or a process restarted after a crash) sees either the old file or the new
one, never a half-written one. A writer killed mid-write leaves a hidden temp sibling
(``.NAME.HOST-PID.XXXX.tmp``); the next successful write of the same path removes it. ``rename`` is atomic only within one filesystem, so the
temp file always lives in the destination's own directory.

    atomic_write_text(path, text)          # also: atomic_write_bytes, atomic_write_json
    with atomic_path(path) as tmp:         # for libraries that insist on writing a path
        save_file(tensors, tmp)
    with atomic_dir(out_dir) as tmp_dir:   # a whole directory appears at once
        ...write files into tmp_dir...
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Persist a directory's entries (a rename is durable only once its directory is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # some platforms (Windows) cannot open directories; nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. filesystems that do not support fsync on directories
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file, then every directory (deepest first) under ``root``."""
    root = Path(root)
    dirs = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_file(Path(dirpath) / name)
        dirs.extend(Path(dirpath) / d for d in dirnames)
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


def _host() -> str:
    return socket.gethostname().replace(".", "_")  # no dots: the temp name is split on them


def _temp_prefix(path: Path) -> str:
    """``.NAME.HOST-PID.``: whose temp sibling this is, so leftovers of dead writers can be found."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove temp siblings of ``path`` left by writers on this host that no longer run (a SIGKILL
    between creating the temp and the rename); returns what was removed. Temps of live processes
    and of other hosts (a shared filesystem) are left alone."""
    path = Path(path)
    host, removed = _host(), []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        owner = tmp.name[len(path.name) + 2:].split(".", 1)[0]  # HOST-PID
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it onto ``path``.

    On any exception the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    remove_stale_temps(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory beside ``path``; on success it replaces ``path`` whole.

    Files written inside are fsynced before the rename. An existing ``path`` is moved
    aside first and deleted only after the new directory is in place, so at every instant
    one complete version exists on disk. On any exception the temp directory is removed,
    ``path`` is left as it was, and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    remove_stale_temps(path)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename directory ``src`` onto ``dst``, replacing a previous ``dst`` if there is one."""
    old: Path | None = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.rmdir(old)
        os.replace(dst, old)  # a directory cannot be renamed onto a non-empty one
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
