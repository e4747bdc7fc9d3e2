"""tasks/sandbox.py: real child processes under small limits; each hostile sample is contained."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.config import SandboxLimits
from tasks.sandbox import run_python

LIMITS = SandboxLimits(cpu_seconds=1, memory_mb=256, wall_seconds=3, workers=2)
ADD = "def add(a, b):\n    return a + b\n"


def run(code: str, limits: SandboxLimits = LIMITS):
    return run_python(code, limits)


def test_correct_code_passes():
    result = run(ADD + "assert add(2, 3) == 5\n")
    assert (result.status, result.passed) == ("passed", True)


def test_wrong_code_fails_with_the_assert_in_the_tail():
    result = run("def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n")
    assert (result.status, result.passed) == ("failed", False)
    assert "assert add(2, 3) == 5" in result.stderr_tail and "AssertionError" in result.stderr_tail


@pytest.mark.parametrize("code", ["def add(a, b:\n", "add(1, 2)\n", "raise ValueError('no')\n"])
def test_broken_code_is_an_error(code):
    assert run(code).status == "error"


@pytest.mark.parametrize("code", ["import sys\nsys.exit(0)\nassert False\n", "import os\nos._exit(0)\nassert False\n",
                                  "raise SystemExit\n"])
def test_exiting_before_the_tests_is_not_a_pass(code):
    assert run(code).status == "error"


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    result = run("while True:\n    pass\n")
    assert result.status == "timeout" and not result.passed
    assert result.seconds < LIMITS.wall_seconds + 1


def test_idle_hang_is_stopped_by_the_wall_limit():
    limits = SandboxLimits(cpu_seconds=1, memory_mb=256, wall_seconds=1.5)
    result = run("import time\ntime.sleep(60)\n", limits)
    assert result.status == "timeout"
    assert 1.4 < result.seconds < 4


def test_unbounded_allocation_is_contained_and_the_caller_survives():
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n")
    assert result.status == "memory" and not result.passed
    assert run(ADD + "assert add(1, 1) == 2\n").passed  # this process and the sandbox still work


def test_one_huge_allocation_is_a_memory_error():
    assert run("x = [0] * 10**9\n").status == "memory"


@pytest.fixture
def outside(tmp_path) -> Path:
    victim = tmp_path / "outside"
    victim.mkdir()
    (victim / "keep.txt").write_text("original")
    return victim


@pytest.mark.parametrize("action", [
    "open({f!r}, 'w').write('changed')",
    "open({f!r}, 'a').write('changed')",
    "import os\nos.remove({f!r})",
    "import os\nos.unlink({f!r})",
    "import os\nos.rename({f!r}, {f!r} + '.moved')",
    "import os\nos.truncate({f!r}, 0)",
    "import os\nos.chmod({f!r}, 0)",
    "import shutil\nshutil.rmtree({d!r})",
    "import os\nos.symlink({f!r}, 'link')\nopen('link', 'w').write('changed')",
    "import pathlib\npathlib.Path({f!r}).write_text('changed')",
    "import pathlib\npathlib.Path({f!r}).unlink()",
    "import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.remove('keep.txt', dir_fd=fd)",
])
def test_touching_files_outside_is_blocked_and_the_file_is_unchanged(outside, action):
    keep = outside / "keep.txt"
    before = (keep.stat().st_mode, keep.stat().st_mtime_ns)
    result = run("try:\n    " + action.format(f=str(keep), d=str(outside)).replace("\n", "\n    ")
                 + "\nexcept BaseException:\n    pass\n")  # catching cannot undo a block
    assert result.status == "blocked" and not result.passed
    assert "sandbox: blocked" in result.stderr_tail
    assert keep.read_text() == "original" and (keep.stat().st_mode, keep.stat().st_mtime_ns) == before
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


def test_creating_files_outside_is_blocked(outside):
    result = run(f"open({str(outside / 'new.txt')!r}, 'w').write('x')\n")
    assert result.status == "blocked"
    assert not (outside / "new.txt").exists()


def test_reading_files_outside_is_blocked(outside):
    assert run(f"print(open({str(outside / 'keep.txt')!r}).read())\n").status == "blocked"
    assert run(f"import os\nos.listdir({str(outside)!r})\n").status == "blocked"


def test_files_inside_the_working_directory_are_allowed():
    code = ("import os, tempfile\nopen('a.txt', 'w').write('hi')\nos.mkdir('d')\nos.rename('a.txt', 'd/b.txt')\n"
            "assert open('d/b.txt').read() == 'hi'\nos.remove('d/b.txt')\nos.rmdir('d')\n"
            "with tempfile.TemporaryDirectory() as t:\n    open(os.path.join(t, 'x'), 'w').write('y')\n")
    assert run(code).status == "passed"


def test_standard_library_imports_work():
    code = ("import collections, heapq, re, math, itertools, functools, json, random, string, bisect, datetime\n"
            "import fractions, decimal, statistics, typing, operator, copy, array, dataclasses\n"
            "assert math.gcd(12, 18) == 6 and heapq.nsmallest(1, [3, 1]) == [1]\n")
    assert run(code).status == "passed"


@pytest.mark.parametrize("code", [
    "import socket\nsocket.socket()",
    "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)",
    "import socket\nsocket.getaddrinfo('example.com', 80)",
    "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)",
])
def test_network_is_blocked(code):
    result = run("try:\n    " + code.replace("\n", "\n    ") + "\nexcept BaseException:\n    pass\n")
    assert result.status == "blocked"


@pytest.mark.parametrize("code", [
    "import subprocess\nsubprocess.run(['true'])",
    "import os\nos.system('true')",
    "import os\nos.popen('true').read()",
    "import os\nos.execv('/bin/true', ['true'])",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "import pty\npty.fork()",
    "import ctypes",
    "import os, signal\nos.kill(1, signal.SIGTERM)",
])
def test_processes_native_code_and_signals_are_blocked(code):
    assert run(code + "\n").status == "blocked"


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()\n",
    "import multiprocessing\nwhile True:\n    multiprocessing.Process(target=print).start()\n",
])
def test_fork_bomb_is_contained(code):
    result = run(code)
    assert result.status == "blocked"
    assert result.seconds < LIMITS.wall_seconds


def test_raising_limits_is_blocked():
    code = "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))\n"
    assert run(code).status == "blocked"


def test_environment_is_minimal(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_TEST_SECRET", "s3cret")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    code = ("import os\nassert 'FLYWHEEL_TEST_SECRET' not in os.environ\n"
            "assert not any('proxy' in k.lower() for k in os.environ)\n"
            "assert os.environ['HOME'] == os.getcwd()\n")
    assert run(code).status == "passed"


def test_working_directory_is_removed(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    code = "import os\nassert os.getcwd().startswith({!r})\nopen('left.txt', 'w').write('x' * 1000)\n"
    assert run(code.format(str(scratch))).status == "passed"
    assert run("open('left.txt', 'w').write('x')\nwhile True:\n    pass\n").status == "timeout"
    locked = "import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\nos.chmod('a/b', 0)\nos.chmod('a', 0)\n"
    assert run(locked).status == "passed"
    assert list(scratch.iterdir()) == []


def test_file_size_is_limited():
    limits = SandboxLimits(cpu_seconds=1, memory_mb=256, wall_seconds=3, file_size_mb=1)
    code = "open('big', 'wb').write(b'x' * (2 * 1024 * 1024))\n"
    assert run(code, limits).status == "error"


def test_limits_are_validated():
    with pytest.raises(ValidationError, match="wall_seconds"):
        SandboxLimits(cpu_seconds=5, wall_seconds=2)
    with pytest.raises(ValidationError):
        SandboxLimits(memory_mb=8)
    with pytest.raises(ValidationError):
        SandboxLimits(workers=0)
