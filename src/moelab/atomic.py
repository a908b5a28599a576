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


# ---------------------------------------------------------------- a full disk

# How libraries that do not raise OSError say the filesystem is full: safetensors' Rust writer
# ("… IoError(Os { code: 28, kind: StorageFull … })"), DuckDB ("… No space left on device").
# torch.save's zip writer does not say ("unexpected pos 268800 vs 268752"): see is_disk_full.
_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded",
               "os error 28", "os error 122", "code: 28", "code: 122")


class DiskFull(OSError):
    """A write ran out of space. ``filename`` is the file it was writing (where it goes once complete,
    not the temp name) and the message says how much space is left there, in one line:
    ``No space left on device writing RUN/checkpoints/step-10/optim.pt (0 B free there)``.
    Every writer in moelab.atomic raises it, so each command that writes through them (checkpoints,
    evaluation summaries, the store, reports, prepared data) reports a full disk the same way."""

    free: int | None = None  # bytes free when the write failed (before its temp files were removed)

    def __str__(self) -> str:
        return disk_full_message(self.filename, self.free)


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to an unprivileged writer on the filesystem holding ``path`` (its nearest
    existing ancestor), or None when it cannot be asked."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_full_message(filename, free: int | None = None) -> str:
    """``No space left on device writing FILE (N free there)``: the one line a full disk gets."""
    from moelab.resources import human_bytes

    where = f" writing {filename}" if filename else ""
    if free is None and filename:
        free = free_bytes(filename)
    left = f" ({human_bytes(free)} free there)" if free is not None else ""
    return f"No space left on device{where}{left}"


def is_disk_full(err: BaseException, where: str | Path | None = None) -> bool:
    """Whether ``err`` is the filesystem running out of space: ENOSPC/EDQUOT, a library's words for
    it, or — for a library error that does not say why (torch.save: "unexpected pos 268800 vs
    268752") — a directory ``where`` that refuses a small write right now."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(w in str(err) for w in _FULL_WORDS):
        return True
    from moelab.errors import UserError

    library_error = isinstance(err, Exception) and not isinstance(err, (OSError, UserError))
    return where is not None and library_error and _refuses_a_write(where)


def _refuses_a_write(directory: str | Path, size: int = 1 << 16) -> bool:
    """Ask the filesystem itself: does ``directory`` take ``size`` more bytes (written and synced)?"""
    import errno

    try:
        fd, name = tempfile.mkstemp(prefix=".moelab-space.", suffix=".tmp", dir=directory)
    except OSError as err:
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        os.write(fd, b"\0" * size)
        os.fsync(fd)
        return False
    except OSError as err:
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    finally:
        os.close(fd)
        os.unlink(name)


def as_disk_full(err: BaseException, path: Path, tmp: Path | None = None) -> DiskFull | None:
    """``err`` as a :class:`DiskFull` naming the destination ``path`` (a file inside the temp
    directory ``tmp`` is named at its final place), or None when it is another error. For writers
    that cannot go through :func:`atomic_path` (DuckDB writes its own file): call it before
    removing the temp file, so that the free space reported is the space at the failure."""
    import errno

    if isinstance(err, DiskFull) or not is_disk_full(err, path.parent):
        return None
    name = getattr(err, "filename", None)
    target = path
    if name:
        try:
            target = path / Path(name).relative_to(tmp) if tmp is not None else Path(name)
        except ValueError:
            target = path if Path(name) == tmp else Path(name)
    full = DiskFull(errno.ENOSPC, "No space left on device", str(target))
    full.free = free_bytes(path.parent)
    return full


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
    except BaseException as err:
        full = as_disk_full(err, path, tmp)  # before the cleanup: the free space at the failure
        tmp.unlink(missing_ok=True)
        if full is not None:
            raise full from err
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
    except BaseException as err:
        full = as_disk_full(err, path, tmp)  # before the cleanup: the free space at the failure
        shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from err
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
