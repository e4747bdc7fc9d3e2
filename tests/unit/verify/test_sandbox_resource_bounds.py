"""Hostile samples against what the host gives the sandbox: memory of every kind, disk, tasks, time.

Every attack runs through `make_verifier("unit_tests")` with small limits, and each test asserts
what the attack wanted did not happen: the wrong solution is not graded correct, the samples'
cgroup never held more than its limit (where the host has cgroups), host memory (MemAvailable)
and free disk are what they were afterwards, and the call returned in its time. The batch tests
check that a hostile neighbour never changes an honest sample's grade.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from tasks.config.recipe import SandboxLimits, VerifierConfig
from tasks.verify.sandbox import cgroup
from tasks.verify.sandbox.host import tmp_bytes
from tasks.verify.verifiers import make_verifier
from tests.test_sandbox import sandbox_ready  # noqa: F401 - the fixture: fail in CI, skip elsewhere

pytestmark = pytest.mark.usefixtures("sandbox_ready")

MiB = 1 << 20
LIMITS = SandboxLimits(cpu_seconds=2, memory_mb=128, wall_seconds=4, file_size_mb=4)
ONE = cgroup.sample_limit(LIMITS.memory_mb, tmp_bytes(LIMITS))  # what one sample's cgroup may hold
# MemAvailable and free disk move with the rest of the (shared) host: coarse margins, far below what the
# attacks took before (0.9 to over 3 GB of memory, 1.8 GB of disk); the cgroup's figures are the exact ones
LEFT_BEHIND = 512 * MiB
DISK_MARGIN = 128 * MiB
TESTS = '["assert add(2, 3) == 5", "assert add(10, 20) == 30"]'
WRONG = "\ndef add(a, b):\n    return a - b\n"
RIGHT = "\ndef add(a, b):\n    return a + b\n"
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable")


def _free_disk() -> int:
    st = os.statvfs(tempfile.gettempdir())
    return st.f_bavail * st.f_frsize


def _reset_peak() -> None:
    parent = cgroup._parent
    if parent is not None:
        name = "memory.peak" if parent.layout.v2 else "memory.max_usage_in_bytes"
        try:
            (parent.memory_dir / name).write_text("reset" if parent.layout.v2 else "0")
        except OSError:
            pass


def verify(codes: list[str], limits: SandboxLimits = LIMITS, tests: str = TESTS) -> list[str]:
    """Statuses of `codes` (one prompt), all run at once, timed against the wall limits."""
    prompts = pl.DataFrame({"prompt_id": ["p"], "answer": [tests]})
    samples = pl.DataFrame({"prompt_id": ["p"] * len(codes), "sample_idx": list(range(len(codes))),
                            "text": [f"```python\n{code}\n# copy {i}\n```" for i, code in enumerate(codes)]},
                           schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String})
    verifier = make_verifier("unit_tests", VerifierConfig(type="unit_tests",
                                                          sandbox=limits.model_copy(update={"workers": len(codes)})))
    start = time.monotonic()
    out = verifier.verify(samples, prompts)
    # the watchdog's hard limit, and teardown
    assert time.monotonic() - start < limits.wall_seconds + 2 + 10
    return out["extracted_answer"].to_list()


def bounded(code: str, copies: int = 1) -> list[str]:
    """Run `code` + a wrong `add`; assert it gained nothing and left nothing behind, in memory or on disk."""
    mem0, disk0 = _available(), _free_disk()
    _reset_peak()
    statuses = verify([code + WRONG] * copies if copies == 1 else
                      [f"{code}{WRONG}# {i}" for i in range(copies)])
    assert "passed" not in statuses, statuses
    peak = cgroup.parent_peak_bytes()
    if cgroup.layout() is not None:
        assert 0 < peak <= ONE * copies + MiB, (peak, ONE)  # the kernel may overshoot by a few pages
    settle = time.monotonic() + 5  # the killed namespaces' memory is freed by the kernel shortly after
    while (_available() <= mem0 - LEFT_BEHIND or cgroup.parent_usage_bytes() > 8 * MiB) and time.monotonic() < settle:
        time.sleep(0.1)
    assert cgroup.parent_usage_bytes() <= 8 * MiB, "memory still charged to the samples after they ended"
    if cgroup.layout() is None:  # else the cgroup's own figure above is the exact one (others move MemAvailable)
        assert _available() > mem0 - LEFT_BEHIND, "memory left behind after the sandbox ended"
    assert _free_disk() > disk0 - DISK_MARGIN, "host disk taken"
    return statuses


# ================================================================ memory outside the address space
MEMFD = ("import os\nkeep = []\nwhile True:\n    fd = os.memfd_create('x')\n    keep.append(fd)\n"
         "    for _ in range(4):\n        os.write(fd, b'x' * (1 << 20))\n")
SYSV_SHM = (LIBC + "libc.shmat.restype = ctypes.c_void_p\nlibc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, "
            "ctypes.c_int]\nlibc.shmdt.argtypes = [ctypes.c_void_p]\n"
            "for _ in range(1000):\n    sid = libc.shmget(0, 32 << 20, 0o1600)\n    if sid < 0:\n        break\n"
            "    addr = libc.shmat(sid, None, 0)\n    ctypes.memset(ctypes.c_void_p(addr), 1, 32 << 20)\n"
            "    libc.shmdt(ctypes.c_void_p(addr))\n")
SYSV_MSG = (LIBC + "buf = ctypes.create_string_buffer(8 + 8000)\nbuf[0] = 1\n"
            "for _ in range(5000):\n    q = libc.msgget(0, 0o1600)\n    if q < 0:\n        break\n"
            "    while libc.msgsnd(q, buf, 8000, 0o4000) == 0:\n        pass\n")
POSIX_SHM = "i = 0\nwhile True:\n    with open(f'/dev/shm/x{i}', 'wb') as f:\n        f.write(b'x' * (4 << 20))\n    i += 1\n"
TMPFS_INODES = "import os\ni = 0\nwhile True:\n    os.close(os.open(f'/tmp/{i}', os.O_CREAT | os.O_WRONLY))\n    i += 1\n"
TMPFS_DIRS = "import os\ni = 0\nwhile True:\n    os.mkdir(f'/tmp/d{i}')\n    i += 1\n"
TMPFS_PAGES = "i = 0\nwhile True:\n    with open(f'/tmp/f{i}', 'wb') as f:\n        f.write(b'x' * (1 << 20))\n    i += 1\n"
PIPES = ("import fcntl, os\nkeep = []\nwhile True:\n    r, w = os.pipe()\n    keep += [r, w]\n"
         "    fcntl.fcntl(w, 1031, 1 << 20)\n    os.set_blocking(w, False)\n"
         "    try:\n        while True:\n            os.write(w, b'x' * 65536)\n    except BlockingIOError:\n"
         "        pass\n")
KERNEL_OBJECTS = ("import os, select, signal\nkeep = []\nwhile True:\n    keep.append(select.epoll())\n"
                  "    keep.append(os.eventfd(0))\n"
                  + LIBC.replace("import ctypes, os\n", "") + "    keep.append(libc.inotify_init())\n"
                  "    keep.append(libc.timerfd_create(1, 0))\n    if len(keep) > 10**5:\n        break\n")
ANONYMOUS = "keep = []\nwhile True:\n    keep.append(bytearray(8 << 20))\n"
MMAP_SHARED = ("import mmap\nkeep = []\nwhile True:\n    m = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_SHARED)\n"
               "    m.write(b'x' * (8 << 20))\n    keep.append(m)\n")
HUGE_ARGV = "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'pass'] + ['x' * 100000] * 2000)\n"
HUGE_ENV = "import os\nos.environ.update({f'V{i}': 'x' * 100000 for i in range(3000)})\n"


@pytest.mark.parametrize("attack", [
    pytest.param(MEMFD, id="memfd-filled-to-the-file-size-limit"),
    pytest.param(SYSV_SHM, id="sysv-shm-attach-detach-loop"),
    pytest.param(SYSV_MSG, id="sysv-message-queues"),
    pytest.param(POSIX_SHM, id="posix-shm-in-dev-shm"),
    pytest.param(TMPFS_INODES, id="hundreds-of-thousands-of-tiny-tmpfs-files"),
    pytest.param(TMPFS_DIRS, id="tmpfs-directories"),
    pytest.param(TMPFS_PAGES, id="tmpfs-pages"),
    pytest.param(PIPES, id="pipe-buffers"),
    pytest.param(KERNEL_OBJECTS, id="epoll-inotify-eventfd-timerfd"),
    pytest.param(ANONYMOUS, id="anonymous-memory"),
    pytest.param(MMAP_SHARED, id="shared-anonymous-mappings"),
    pytest.param(HUGE_ARGV, id="huge-argv"),
    pytest.param(HUGE_ENV, id="huge-environment"),
])
def test_memory_of_every_kind_is_bounded_per_sample(attack):
    bounded(attack)


def test_memory_is_bounded_for_several_hostile_samples_at_once():
    statuses = bounded(TMPFS_PAGES + MEMFD + ANONYMOUS, copies=3)
    assert set(statuses) <= {"memory", "error"}, statuses


def test_tiny_files_hit_the_samples_own_memory_limit():
    if cgroup.layout() is None:
        pytest.skip("no cgroups on this host: tmpfs inodes are bounded by the CPU limit only")
    limits = LIMITS.model_copy(update={"cpu_seconds": 20, "wall_seconds": 20})  # time enough to reach the limit
    _reset_peak()
    statuses = verify([TMPFS_INODES + WRONG], limits)
    assert statuses == ["memory"]
    assert cgroup.parent_peak_bytes() <= ONE + MiB


# ================================================================ disk through an inherited descriptor
def test_fallocate_keep_size_on_stderr_takes_no_host_disk():
    attack = (LIBC + "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
              "assert libc.fallocate(2, 1, 0, 1 << 30) != 0\nassert ctypes.get_errno() != 0\n")
    before = _free_disk()
    statuses = bounded(attack)
    assert statuses == ["failed"]  # fallocate failed (a pipe), so the wrong add is what fails
    assert _free_disk() > before - DISK_MARGIN


def test_a_stderr_flood_is_cut_off_and_kept_short():
    from tasks.verify.sandbox.run import run_tests

    result = run_tests("import os\nwhile True:\n    os.write(2, b'x' * 65536)\n" + WRONG, ["assert add(1, 1) == 2"],
                       LIMITS)
    assert result.status == "error" and "BrokenPipeError" in result.stderr_tail, result
    assert len(result.stderr_tail) < 10_000


# ================================================================ tasks and CPU
def test_fork_bomb_is_stopped():
    assert bounded("import os\nwhile True:\n    os.fork()\n") == ["blocked"]


def test_a_busy_loop_ends_at_the_cpu_limit():
    assert bounded("while True:\n    pass\n") == ["timeout"]


# ================================================================ neighbours
HONEST = ("def add(a, b):\n    total = 0\n    for i in range(3_000_000):\n        total += i & 1\n"
          "    return a + b + total - total\n")


@pytest.mark.parametrize("hostile", [
    pytest.param("while True:\n    pass\n", id="cpu-burner"),
    pytest.param(TMPFS_INODES, id="tiny-files"),
    pytest.param(ANONYMOUS + MEMFD, id="memory"),
    pytest.param("import time\ntime.sleep(60)\n", id="sleeper"),
    pytest.param("import os\nwhile True:\n    os.write(2, b'x' * 65536)\n", id="stderr-flood"),
])
def test_a_hostile_neighbour_never_changes_an_honest_samples_grade(hostile):
    limits = LIMITS.model_copy(update={"wall_seconds": 8})  # room for a loaded host; the same both times
    alone = verify([HONEST], limits)
    assert alone == ["passed"]
    # three hostile samples and the honest one at once, more sandboxes than the host has cores
    statuses = verify([hostile + WRONG + "# 1", HONEST, hostile + WRONG + "# 2", hostile + WRONG + "# 3"], limits)
    assert statuses[1] == "passed", statuses
    assert "passed" not in statuses[:1] + statuses[2:]


def test_time_the_verifier_spends_is_not_charged_to_the_sample(monkeypatch):
    from tasks.verify.sandbox import checks

    real = checks.Evaluator.check

    def slow_check(self, step):  # the verifier busy (decoding, checking, waiting for the GIL)
        time.sleep(1.5)
        return real(self, step)

    monkeypatch.setattr(checks.Evaluator, "check", slow_check)
    limits = LIMITS.model_copy(update={"wall_seconds": 2})
    assert verify([RIGHT], limits) == ["passed"]  # 3 s of the verifier's time, 2 s wall limit


def _marked(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == marker:
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_the_sandbox_is_killed_at_its_limit_whatever_the_verifier_is_doing(monkeypatch):
    import threading

    from tasks.verify.sandbox import checks

    marker = f"fw{os.getpid() % 100000}hang"
    stuck = threading.Event()

    def stuck_check(self, step):  # the verifier hangs with the sandbox alive
        stuck.set()
        time.sleep(9)
        raise checks.CheckFailed("late")

    monkeypatch.setattr(checks.Evaluator, "check", stuck_check)
    limits = LIMITS.model_copy(update={"wall_seconds": 2})  # the watchdog fires at 2 + 1.5 s
    code = f"import ctypes\nctypes.CDLL(None).prctl(15, {marker.encode()!r}, 0, 0, 0)\n" + RIGHT
    from tasks.verify.sandbox.run import run_tests

    worker = threading.Thread(target=lambda: run_tests(code, ["assert add(1, 1) == 2"], limits), daemon=True)
    start = time.monotonic()
    worker.start()
    assert stuck.wait(5)
    assert _marked(marker), "the sandbox should be alive while the verifier is stuck"
    while _marked(marker) and time.monotonic() - start < 7:
        time.sleep(0.1)
    assert not _marked(marker), "the sandbox outlived its hard limit"
    assert time.monotonic() - start < 6
    worker.join(30)


# ================================================================ without cgroups
def test_without_cgroups_the_fallback_still_holds(monkeypatch, caplog):
    monkeypatch.setenv(cgroup.ENV, "off")
    monkeypatch.setattr(cgroup, "_parent", None)
    cgroup.layout.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=cgroup.__name__):
            assert cgroup.layout() is None
        assert any("cgroups are off" in r.getMessage() for r in caplog.records)
        assert verify([SYSV_SHM + WRONG]) == ["blocked"]
        assert verify([SYSV_MSG + WRONG]) == ["blocked"]
        probe = "import os\ntry:\n    os.memfd_create('x')\n    r = 'made'\nexcept OSError as e:\n    r = e.errno\n"
        assert verify([probe + "def add(a, b):\n    return r\n"], tests='["assert add(1, 1) == 38"]') == ["passed"]
        disk = _free_disk()
        attack = (LIBC + "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
                  "libc.fallocate(2, 1, 0, 1 << 30)\n")
        assert verify([attack + WRONG]) == ["failed"]
        assert _free_disk() > disk - DISK_MARGIN
        assert verify([RIGHT]) == ["passed"]
    finally:
        monkeypatch.delenv(cgroup.ENV)
        cgroup.layout.cache_clear()
