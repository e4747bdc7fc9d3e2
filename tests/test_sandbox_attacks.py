"""Hostile samples against the real sandbox, one class of attack per section.

Each test asserts that what the attack tried to do did not happen: no file outside changed or
created, no process alive afterwards, no victim process harmed, no secret in the output, no wrong
solution graded correct, and the call returned within its deadline. The first seven sections are
the classes that broke the audit-hook sandbox (issue 17); the rest are further ones.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tasks.config.recipe import SandboxLimits
from tasks.verify.sandbox.run import run_tests
from tests.test_sandbox import sandbox_ready  # noqa: F401 - the fixture: fail in CI, skip elsewhere

pytestmark = pytest.mark.usefixtures("sandbox_ready")

ROOT = Path(__file__).resolve().parent.parent
LIMITS = SandboxLimits(cpu_seconds=2, memory_mb=256, wall_seconds=6)
# The call returns by then, whatever the sample does: the watchdog kills the sandbox 1.5 s of real time
# after its wall limit (tasks/verify/sandbox/run.py, time lost waiting for a CPU is given back until
# then), plus the sandbox's start and teardown on a busy machine.
DEADLINE = LIMITS.wall_seconds + 4
# Hidden tests: a wrong `add` must fail them whatever it does to the sandbox.
TESTS = ["assert add(2, 3) == 5", "assert add(10, 20) == 30", "assert add(-7, 7) == 0"]
WRONG = "def add(a, b):\n    return a - b\n"


def attempt(code: str, tests: list[str] | None = None, limits: SandboxLimits = LIMITS):
    start = time.monotonic()
    result = run_tests(code, tests or TESTS, limits)
    assert time.monotonic() - start < limits.wall_seconds + DEADLINE - LIMITS.wall_seconds, result
    return result


def quietly(action: str) -> str:
    """`action` with every exception swallowed: catching must not undo what the kernel refused."""
    return "try:\n    " + action.replace("\n", "\n    ") + "\nexcept BaseException:\n    pass\n"


def processes_marked(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker[:15] in comm or marker in cmdline:
            found.append(int(pid))
    return found


def mark_process(marker: str) -> str:
    """Code that names the current process `marker` (comm, via prctl), so a survivor can be found."""
    return f"import ctypes\nctypes.CDLL(None).prctl(15, {marker[:15].encode()!r}, 0, 0, 0)\n"


@pytest.fixture
def outside(tmp_path) -> Path:
    victim = tmp_path / "outside"
    victim.mkdir()
    (victim / "keep.txt").write_text("original")
    (victim / "secret.txt").write_text("TOPSECRET-" + uuid.uuid4().hex)
    return victim


def unchanged(victim: Path) -> bool:
    return sorted(p.name for p in victim.iterdir()) == ["keep.txt", "secret.txt"] and \
        (victim / "keep.txt").read_text() == "original"


# ================================================================ 1. disabling the guard from inside
# The old guard was an audit hook in the sample's interpreter. The runner still lives there and the
# sample may rewrite all of it; the kernel's limits do not care.
REWRITE_RUNNER = """
import builtins, os, sys, resource, json
main = sys.modules['__main__']
for name in ('set_limits', 'encode', 'answer', 'raised', 'send'):
    setattr(main, name, lambda *a, **k: None)
builtins.any = builtins.all = lambda *a: False
os._exit = sys.exit = lambda *a: None
resource.setrlimit = lambda *a: None
sys.addaudithook = lambda *a: None
"""


@pytest.mark.parametrize("then", [
    "import socket\nsocket.socket()",
    "import os\nos.fork()",
    "import subprocess\nsubprocess.run(['/bin/true'])",
    "open({f!r}, 'w').write('changed')",
])
def test_rewriting_the_runner_gains_nothing(outside, then):
    result = attempt(REWRITE_RUNNER + quietly(then.format(f=str(outside / "keep.txt"))) + WRONG)
    assert not result.passed and unchanged(outside)


def test_limits_cannot_be_raised_after_rewriting_the_runner():
    code = quietly("import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))") + \
        quietly("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))") + "while True:\n    pass\n"
    # a wall limit far above the CPU limit: on a busy machine the CPU limit must still be what ends it
    result = attempt(code, limits=SandboxLimits(cpu_seconds=1, memory_mb=256, wall_seconds=15))
    assert result.status == "timeout" and "CPU time limit" in result.stderr_tail


# ================================================================ 2. interpreters without the guard
@pytest.mark.parametrize("run_inner", [
    "import _xxsubinterpreters as si\nsi.run_string(si.create(), {inner!r})",
    "import _testcapi\n_testcapi.run_in_subinterp({inner!r})",
])
@pytest.mark.parametrize("inner", [
    "import socket; socket.socket()",
    "import os; os.fork()",
    "open({f!r}, 'w').write('changed')",
])
def test_sub_interpreters_are_bound_by_the_same_kernel_limits(outside, run_inner, inner):
    code = quietly(run_inner.format(inner=inner.format(f=str(outside / "keep.txt")))) + WRONG
    result = attempt(code)
    assert not result.passed and unchanged(outside)


# ================================================================ 3. native code
LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"


@pytest.mark.parametrize("call", [
    "libc.fork()",
    "libc.syscall(57)",  # fork, by number
    "libc.syscall(41, 2, 1, 0)",  # socket(AF_INET, SOCK_STREAM)
    "libc.syscall(272, 0x10000000)",  # unshare(CLONE_NEWUSER)
    "libc.syscall(165, b'none', b'/tmp', b'proc', 0, 0)",  # mount
    "libc.syscall(425, 8, 0)",  # io_uring_setup
    "libc.syscall(250, 0, 0, 0, 0, 0)",  # keyctl
])
def test_native_calls_through_ctypes_are_killed(call):
    if platform.machine() != "x86_64":
        pytest.skip("system call numbers are x86_64's")
    result = attempt(quietly(LIBC + call) + WRONG)
    assert result.status == "blocked"


def test_loading_posixsubprocess_under_another_name_starts_nothing():
    marker = "fw" + uuid.uuid4().hex[:12]
    code = quietly(
        "import importlib.machinery, importlib.util, sys, os\n"
        "path = [p for p in sys.path if p.endswith('lib-dynload')][0]\n"
        "name = [n for n in os.listdir(path) if n.startswith('_posixsubprocess')][0]\n"
        "loader = importlib.machinery.ExtensionFileLoader('innocent._posixsubprocess', os.path.join(path, name))\n"
        "mod = loader.load_module()\n"
        f"mod.fork_exec([sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}], [sys.executable.encode()],"
        " True, (), None, None, -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None, False)"
    ) + WRONG
    result = attempt(code)
    assert result.status == "blocked" and processes_marked(marker) == []


def test_hand_written_machine_code_making_a_system_call_is_killed():
    if platform.machine() != "x86_64":
        pytest.skip("x86_64 machine code")
    # mov eax, 57 (fork); syscall; ret -- no C library, no Python, just the kernel's filter
    code = quietly(
        "import ctypes, mmap\n"
        "buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "buf.write(bytes([0xb8, 57, 0, 0, 0, 0x0f, 0x05, 0xc3]))\n"
        "addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))\n"
        "ctypes.CFUNCTYPE(ctypes.c_long)(addr)()") + WRONG
    assert attempt(code).status == "blocked"


@pytest.mark.parametrize("machine_code", [
    [0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3],  # mov eax, 20; int 0x80; ret -- the i386 ABI (getpid)
    [0xB8, 41, 0, 0, 0x40, 0x0F, 0x05, 0xC3],  # mov eax, 0x40000029; syscall; ret -- x32 socket
])
def test_system_calls_through_another_abi_are_killed(machine_code):
    if platform.machine() != "x86_64":
        pytest.skip("x86_64 machine code")
    code = quietly(
        "import ctypes, mmap\n"
        "buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        f"buf.write(bytes({machine_code!r}))\n"
        "ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))()") + WRONG
    assert attempt(code).status == "blocked"


def test_ffi_backends_from_the_environment_are_not_there():
    code = "import os, sys\ndef found():\n    return [m for m in ('_cffi_backend', 'cffi', 'numpy', 'duckdb', 'torch')\n" \
           "            if __import__('importlib.util').util.find_spec(m)]\n"
    result = attempt(code, ["assert found() == []"])
    assert result.passed, result


# ================================================================ 4. file access outside Python's open
@pytest.mark.parametrize("action", [
    "import sqlite3\nsqlite3.connect({f!r}).execute('create table t(x)')",
    "import sqlite3\nsqlite3.connect({d!r} + '/new.db').execute('create table t(x)')",
    "import os\nos.close(os.open({d!r} + '/new.txt', os.O_CREAT | os.O_WRONLY))",
    "import os\nos.remove({f!r})",
    "import os\nos.truncate({f!r}, 0)",
    "import shutil\nshutil.rmtree({d!r})",
    "import os\nos.symlink({f!r}, '/tmp/link')\nopen('/tmp/link', 'w').write('changed')",
    "import os\nfd = os.open({d!r}, os.O_RDONLY)\nos.remove('keep.txt', dir_fd=fd)",
    "open('/etc/hostname', 'w').write('pwned')",
])
def test_files_outside_cannot_be_changed_by_any_route(outside, action):
    before = (outside / "keep.txt").stat().st_mtime_ns
    result = attempt(quietly(action.format(f=str(outside / "keep.txt"), d=str(outside))) + WRONG)
    assert not result.passed and unchanged(outside)
    assert (outside / "keep.txt").stat().st_mtime_ns == before
    assert Path("/etc/hostname").read_text() != "pwned"


@pytest.mark.parametrize("read", [
    "open({s!r}).read()",
    "__import__('sqlite3').connect(':memory:').execute(\"select readfile({s!r})\").fetchone()",
    "open('/proc/1/environ').read()",
    "open('/proc/self/environ').read()",
    "open({venv!r}).read()",
    "open({repo!r}).read()",
    "sorted(__import__('os').listdir('/'))",
    "open('/etc/passwd').read()",
])
def test_nothing_secret_is_readable_and_nothing_leaks_into_the_output(outside, monkeypatch, read):
    token = "hf_" + uuid.uuid4().hex
    monkeypatch.setenv("HF_TOKEN", token)
    secret = (outside / "secret.txt").read_text()
    values = {"s": str(outside / "secret.txt"), "venv": str(ROOT / ".venv" / "pyvenv.cfg"),
              "repo": str(ROOT / "tasks" / "sandbox.py")}
    code = f"import sys\ndef leak():\n    return {read.format(**values)}\n"
    result = attempt(code + f"sys.stderr.write(repr(leak()) if True else '')\n" if "listdir" not in read else code,
                     ["assert leak() == 'x'"])
    assert not result.passed
    for hidden in (secret, token, "include-system-site-packages", "Check a sample's code", "root:x:0:0"):
        assert hidden not in result.stderr_tail
    if "listdir" in read:  # exactly the runtime tree's top level: nothing of the host
        from tasks.verify.sandbox.host import runtime

        assert f"returned {sorted(os.listdir(runtime()[1]))}" in result.stderr_tail, result


# ================================================================ 5. outliving the limits
@pytest.mark.parametrize("escape", [
    "import os\nos.setpgid(0, os.getpgid(os.getppid()))",
    "import os\nif os.fork() == 0:\n    os.setsid()\n    {mark}    import time\n    time.sleep(30)",
    "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=False).start()",
    "import os\nos.posix_spawn('/bin/sleep', ['sleep', '30', '{marker}'], {{}})",
    "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', '{marker}'])",
])
def test_nothing_outlives_the_run(escape):
    marker = "fw" + uuid.uuid4().hex[:12]
    code = quietly(escape.format(marker=marker, mark=mark_process(marker).replace("\n", "\n    "))) + WRONG
    result = attempt(code)
    assert not result.passed
    time.sleep(0.2)
    assert processes_marked(marker) == []


@pytest.mark.parametrize("stall", [
    "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\n"
    "time.sleep(60)",
    "import os, time\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\n"
    "time.sleep(60)",
    "import select\nselect.select([], [], [])",
    "import os, time\nfor fd in range(3, 64):\n    try:\n        os.read(fd, 1 << 20)\n    except OSError:\n        pass\ntime.sleep(60)",
])
def test_a_stalling_sample_ends_at_the_wall_limit_and_leaves_nothing(stall):
    marker = "fw" + uuid.uuid4().hex[:12]
    limits = SandboxLimits(cpu_seconds=1, memory_mb=256, wall_seconds=2)
    start = time.monotonic()
    result = run_tests(mark_process(marker) + stall + "\n" + WRONG, TESTS, limits)
    assert result.status == "timeout" and time.monotonic() - start < limits.wall_seconds + 4
    time.sleep(0.2)
    assert processes_marked(marker) == []


# ================================================================ 6. touching host processes
@pytest.fixture
def victims():
    as_root = subprocess.Popen(["sleep", "60"])
    as_nobody = subprocess.Popen(["sleep", "60"], user=65534, group=65534, extra_groups=[]) \
        if os.geteuid() == 0 else subprocess.Popen(["sleep", "60"])
    yield as_root, as_nobody
    for proc in (as_root, as_nobody):
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("hit", [
    "import os\nos.kill({pid}, 9)",
    "import os\nos.kill(-1, 9)",
    "import os\nos.killpg({pid}, 9)",
    LIBC + "fd = libc.syscall(434, {pid}, 0)\nlibc.syscall(424, fd, 9, 0, 0)",  # pidfd_open + pidfd_send_signal
    LIBC + "libc.syscall(101, 16, {pid}, 0, 0)",  # ptrace(PTRACE_ATTACH)
    LIBC + "libc.syscall(310, {pid}, 0, 0, 0, 0, 0)",  # process_vm_readv
    LIBC + "libc.syscall(302, {pid}, 7, 0, 0)",  # prlimit64 on another process
    "import os\nos.kill({verifier}, 9)",
])
def test_host_processes_are_out_of_reach(victims, hit):
    for victim in victims:
        code = quietly(hit.format(pid=victim.pid, verifier=os.getpid())) + WRONG
        result = attempt(code)
        assert not result.passed
        assert victim.poll() is None  # still running


# ================================================================ 7. forging the result
@pytest.mark.parametrize("forgery", [
    # objects that claim to equal anything
    "class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def add(a, b):\n    return Any()\n",
    "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
    "def add(a, b):\n    return Int(0)\n",
    "class Liar:\n    __class__ = int\n    def __eq__(self, other):\n        return True\n"
    "def add(a, b):\n    return Liar()\n",
    # rewriting how answers are encoded or written
    WRONG + "import sys\nsys.modules['__main__'].encode = lambda value: True\n",
    WRONG + "import os\n_write = os.write\nos.write = lambda fd, data: _write(fd, b'{\"value\": true}\\n')\n",
    WRONG + "import json\njson.dumps = lambda *a, **k: '{\"ok\": true}'\n",
    # writing answers ahead on every descriptor
    WRONG + "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{\"ok\": true}\\n' + b'{\"value\": 5}\\n' * 5)\n"
    "    except OSError:\n        pass\n",
    # looking for the expected values (or a nonce) in the caller's frames
    "import sys\ndef add(a, b):\n    f = sys._getframe(1)\n    while f:\n        for v in f.f_locals.values():\n"
    "            if isinstance(v, dict) and 'expected' in v:\n                return v['expected']\n"
    "        f = f.f_back\n    return a - b\n",
    # exiting early, or saying "passed"
    WRONG + "import os, sys\nsys.stderr.write('passed\\n')\nos._exit(0)\n",
    WRONG + "raise KeyboardInterrupt\n",
    # taking over both pipes with a fresh interpreter that knows only the first (visible) test
    "import os, sys, stat, fcntl\n"
    "def kind(fd):\n    try:\n        return fcntl.fcntl(fd, fcntl.F_GETFL) & 3 if stat.S_ISFIFO(os.fstat(fd).st_mode) else None\n"
    "    except OSError:\n        return None\n"
    "reader = [fd for fd in range(3, 32) if kind(fd) == os.O_RDONLY][0]\n"
    "writer = [fd for fd in range(3, 32) if kind(fd) == os.O_WRONLY][0]\n"
    "os.dup2(reader, 0)\nos.dup2(writer, 1)\n"
    "os.execv(sys.executable, [sys.executable, '-c', 'import sys\\nprint(\\'{\"ok\": true}\\', flush=True)\\n"
    "for line in sys.stdin:\\n    print(\\'{\"value\": 5}\\', flush=True)'])\n",
    # builtins the tests use, rewritten in the sample's process
    "import builtins\nbuiltins.sorted = lambda *a, **k: [0, 1, 2]\nbuiltins.set = lambda *a: {0}\n"
    "def add(a, b):\n    return [a - b]\n",
    "import math\nmath.isclose = lambda *a, **k: True\ndef add(a, b):\n    return a - b\n",
])
def test_a_wrong_solution_is_never_graded_correct(forgery):
    tests = [*TESTS, "assert sorted([add(1, 1)]) == [2]", "import math", "assert math.isclose(add(1, 1), 2)"]
    result = attempt(forgery, tests)
    assert not result.passed, result


@pytest.mark.parametrize("test", ["assert add(1, 1) == 2 ** 70", "assert add(1, 1) == list(range(3))",
                                  "big = 2 ** 70", "assert add(1, 1) == big"])
def test_the_expected_side_is_computed_here_even_when_it_is_not_a_literal(test):
    # every value the sample's process reports is 5: had the verifier asked it for `2 ** 70` too, 5 == 5
    forged = "import sys\nsys.modules['__main__'].encode = lambda value: 5\ndef add(a, b):\n    return 5\n"
    tests = ["big = 2 ** 70", test] if test.startswith("assert") else [test, "assert add(1, 1) == big"]
    assert attempt(forged, tests).status == "failed"


def test_the_first_test_alone_can_be_memorised_but_the_hidden_ones_still_fail():
    memorised = "def add(a, b):\n    return 5\n"  # the prompt shows `assert add(2, 3) == 5`
    assert attempt(memorised, TESTS[:1]).passed
    assert attempt(memorised).status == "failed"


@pytest.mark.parametrize(("value", "status"), [
    ("'x' * (200 * 1024 * 1024)", ("memory", "error")),  # larger than the memory limit or the reply limit
    ("'x' * (9 * 1024 * 1024)", ("error",)),  # over the reply limit
    ("eval('[' * 100 + ']' * 100)", ("failed", "error")),  # nested deeper than the decoder takes
    ("(lambda l: (l.append(l), l)[1])([])", ("error",)),  # a list that contains itself
    ("2 ** 400000", ("failed",)),  # too large to check here
    ("iter([])", ("failed",)),
])
def test_oversized_or_odd_values_are_refused_within_the_deadline(value, status):
    result = attempt(f"def add(a, b):\n    return {value}\n")
    assert result.status in status, result


# ================================================================ 8. network
@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    yield server
    server.close()


@pytest.mark.parametrize("connect", [
    "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
    "import socket\nsocket.socket(socket.AF_UNIX).connect('/run/docker.sock')",
    "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW)",
    "import socket\nsocket.getaddrinfo('example.com', 80)",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/', timeout=1)",
    "import asyncio\nasyncio.run(asyncio.open_connection('127.0.0.1', {port}))",
])
def test_no_connection_leaves_the_sandbox(listener, connect):
    port = listener.getsockname()[1]
    result = attempt(quietly(connect.format(port=port)) + WRONG)
    assert result.status == "blocked"
    with pytest.raises(OSError):  # nothing ever connected
        listener.accept()


# ================================================================ 9. exhausting the host
@pytest.mark.parametrize(("bomb", "status"), [
    ("import os\nwhile True:\n    os.fork()", "blocked"),
    ("import multiprocessing\nwhile True:\n    multiprocessing.Process(target=print).start()", "blocked"),
    ("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", "memory"),
    ("i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'x' * 10**6)\n    i += 1", "error"),  # /tmp is small
    ("import sys\nwhile True:\n    sys.stderr.write('spam' * 1000)", "error"),  # the file-size limit
    ("fds = [open('/dev/null') for _ in range(10**6)]", "error"),  # the open-file limit
])
def test_resource_bombs_are_contained(bomb, status):
    result = attempt(bomb + "\n" + WRONG)
    assert result.status == status, result
    assert len(result.stderr_tail) < 10_000


# ================================================================ 10. privileges
UNPRIVILEGED = "[65534, 65534, 65534, []]" if os.geteuid() == 0 else f"[{os.getuid()}, {os.getuid()}, "


@pytest.mark.parametrize(("probe", "expected"), [
    ("import os\ndef add(a, b):\n    return [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()]\n",
     UNPRIVILEGED),
    ("import os\ndef add(a, b):\n    try:\n        os.setuid(0)\n        return 'root'\n    except OSError as e:\n"
     "        return 'refused'\n", "returned 'refused'"),
    ("def add(a, b):\n    try:\n        open('/etc/shadow').read()\n        return 'read'\n    except OSError as e:\n"
     "        return type(e).__name__\n", "returned 'FileNotFoundError'"),
    ("import os\ndef add(a, b):\n    return os.path.exists('/proc/self') or os.path.exists('/sys/kernel')\n",
     "returned False"),
])
def test_the_sample_has_no_privileges(probe, expected):
    result = attempt(probe, ["assert add(1, 1) == 'x'"])
    assert result.status == "failed" and expected in result.stderr_tail, result


def test_a_privileged_helper_binary_cannot_be_run():
    # no setuid programs are visible, and no_new_privs would void one
    code = quietly("import os\nos.execv('/usr/bin/sudo', ['sudo', 'id'])") + \
        "import os\ndef add(a, b):\n    return [p for p in ('/usr/bin/sudo', '/bin/su', '/usr/bin/passwd')\n" \
        "            if os.path.exists(p)]\n"
    result = attempt(code, ["assert add(1, 1) == 'x'"])
    assert "returned []" in result.stderr_tail, result


def test_sandboxes_run_in_parallel_and_agree_with_one_at_a_time():
    from tasks.verify.code_verifier import CodeTestsVerifier
    from tests.test_code_verifier import prompts_frame, samples_frame

    prompts = prompts_frame([f'["assert slow({i}) == {i}"]' for i in range(4)])
    code = "```python\nimport time\ndef slow(x):\n    time.sleep(1)\n    return x\n```"
    samples = samples_frame([(pid, 0, code) for pid in prompts["prompt_id"]])
    limits = SandboxLimits(cpu_seconds=2, memory_mb=256, wall_seconds=10, workers=4)
    start = time.monotonic()
    out = CodeTestsVerifier(limits).verify(samples, prompts)
    assert out["correct"].to_list() == [True] * 4
    assert time.monotonic() - start < 3.5  # four one-second samples at once, not one after another
    one = CodeTestsVerifier(limits.model_copy(update={"workers": 1})).verify(samples, prompts)
    assert one.equals(out)


def test_the_sandbox_never_signals_the_verifier(monkeypatch):
    got = []
    monkeypatch.setattr(signal, "SIGUSR1", signal.SIGUSR1)
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(a))
    try:
        attempt(quietly(f"import os\nos.kill({os.getpid()}, {int(signal.SIGUSR1)})") + WRONG)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == []
    assert sys.exc_info() == (None, None, None)
