"""The code sandbox: correct and wrong solutions, and malicious samples that must be contained."""

import os
import socket
import sys
import time
import uuid

import pytest

from moelab.eval.sandbox import build_program, pass_at_k_code, run_code

OS_ISOLATION = sys.platform.startswith("linux") and os.geteuid() == 0
needs_os_isolation = pytest.mark.skipif(not OS_ISOLATION, reason="OS isolation needs Linux and root")


def test_correct_and_incorrect_solutions():
    good = run_code("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n")
    assert good.passed and good.status == "passed" and good.returncode == 0
    bad = run_code("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5\n")
    assert not bad.passed and bad.status == "failed"
    assert "AssertionError" in bad.stderr_tail
    crash = run_code("def add(a, b):\n    return a +\n")
    assert crash.status == "error" and "SyntaxError" in crash.stderr_tail


def test_infinite_loop_times_out_within_the_limit():
    start = time.monotonic()
    result = run_code("while True:\n    pass\n", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert result.status == "timeout" and not result.passed
    assert elapsed < 2.0


def test_sleeping_program_times_out():
    result = run_code("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert result.status == "timeout"
    assert result.duration_s < 1.5


def test_huge_allocation_hits_the_memory_limit():
    result = run_code("x = bytearray(4 * 1024 ** 3)\nassert False\n", memory_mb=256)
    assert result.status == "memory" and not result.passed
    result = run_code("x = [0] * (10 ** 9)\n", memory_mb=256)
    assert result.status == "memory"


@pytest.mark.parametrize("isolation", ["auto", "python"])
def test_writing_outside_the_directory_is_blocked(tmp_path, isolation):
    target = tmp_path / "escaped.txt"
    other = tmp_path / "escaped2.txt"
    program = (
        f"open({str(target)!r}, 'w').write('pwned')\n"
    )
    result = run_code(program, isolation=isolation)
    assert not result.passed
    assert not target.exists()
    # pathlib / os-level writes and creating directories outside are refused too
    for program in (
        f"import pathlib\npathlib.Path({str(other)!r}).write_text('pwned')\n",
        f"import os\nfd = os.open({str(other)!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')\n",
        f"import os\nos.mkdir({str(tmp_path / 'd')!r})\n",
    ):
        assert not run_code(program, isolation=isolation).passed
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("isolation", ["auto", "python"])
def test_writing_inside_the_directory_works(isolation):
    program = (
        "import os, tempfile, pathlib\n"
        "pathlib.Path('out.txt').write_text('ok')\n"
        "assert open('out.txt').read() == 'ok'\n"
        "os.mkdir('sub')\n"
        "with tempfile.NamedTemporaryFile() as f:\n"
        "    f.write(b'x')\n"
    )
    result = run_code(program, isolation=isolation)
    assert result.passed, result.stderr_tail


@pytest.mark.parametrize("isolation", ["auto", "python"])
def test_socket_to_localhost_fails(isolation):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        program = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'hello')\n"
        )
        result = run_code(program, isolation=isolation)
        assert not result.passed
        assert "unreachable" in result.stderr_tail or "disabled in the moelab sandbox" in result.stderr_tail
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever connected
    finally:
        server.close()


def test_working_directory_is_deleted_afterwards():
    result = run_code("import os, sys\nprint('CWD=' + os.getcwd(), file=sys.stderr)\nopen('f', 'w').write('x')\n")
    assert result.passed
    cwd = result.stderr_tail.split("CWD=")[1].split()[0]
    assert "moelab-sandbox-" in cwd
    assert not os.path.exists(cwd)


@needs_os_isolation
def test_os_isolation_holds_here():
    result = run_code("import re\ns = open('/proc/self/status').read()\n"
                      "assert re.search(r'CapEff:\\s+0+\\n', s), s\n"
                      "import os\nassert os.getpid() == 2, os.getpid()\n")
    assert result.passed, result.stderr_tail
    assert set(result.guards) == {"netns", "readonly-fs", "pidns", "no-caps"}


@needs_os_isolation
def test_background_processes_die_with_the_program():
    marker = f"moelab-sandbox-test-{uuid.uuid4().hex}"
    program = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}],"
        " start_new_session=True)\n"
    )
    result = run_code(program)
    assert result.passed, result.stderr_tail
    time.sleep(0.2)
    alive = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        alive.append(pid)
            except OSError:
                pass
    assert alive == []


def test_pass_at_k_code_humaneval_style():
    tests = "def check(f):\n    assert f(2) == 4\n    assert f(-3) == 9\n"
    samples = [
        "def square(x):\n    return x * x\n",
        "def square(x):\n    return x ** 2\n",
        "def square(x):\n    return 2 * x\n",
        "def square(x):\n    while True:\n        pass\n",
    ]
    out = pass_at_k_code(samples, tests, ks=(1, 2, 8), entry_point="square", timeout_s=1.0, workers=2)
    assert out["n"] == 4 and out["c"] == 2
    assert out["pass_at_k"][1] == pytest.approx(0.5)
    assert out["pass_at_k"][2] == pytest.approx(1 - 1 / 6)
    assert 8 not in out["pass_at_k"]
    assert [r.status for r in out["results"]] == ["passed", "passed", "failed", "timeout"]


def test_build_program_mbpp_style():
    program = build_program("def f():\n    return 1\n", "assert f() == 1")
    assert run_code(program).passed
