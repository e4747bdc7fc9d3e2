"""Check a sample's code against its unit tests: the code runs in a kernel sandbox, the checks here.

Who enforces what (the README's sandbox section has the whole threat model):
- the kernel, set up by bubblewrap (tasks/verify/sandbox/host.py): the sample's process has its own user,
  mount, PID, IPC, UTS and network namespaces, sees only a read-only Python runtime and a private
  tmpfs, runs as an unprivileged uid with no capabilities under no_new_privs, and a seccomp filter
  (tasks/verify/sandbox/seccomp.py) kills it on any attempt to create processes or threads, signal, trace,
  open sockets, mount, or enter namespaces; rlimits it cannot raise bound its CPU time, memory,
  file sizes and open files, and its own cgroup (tasks/verify/sandbox/cgroup.py) bounds memory of
  every kind and its tasks. When its PID namespace's first process dies, the kernel kills every
  process in it, so nothing outlives the run; a watchdog process (`timeout`) kills it at its hard
  limit whatever this process is doing. Its stderr is a pipe read here, capped, never a host file;
- this process: it never runs the sample's text. It sends the code and the sub-expressions of the
  tests to the runner (tasks/verify/sandbox/child.py), decodes the plain values that come back
  (tasks/verify/sandbox/wire.py) and evaluates every assertion itself (tasks/verify/sandbox/checks.py). Every read
  and write on the pipes, and every wait, runs on the sample's own clock (_Clock): it counts only
  while this process waits on that sample, so a busy verifier or a neighbour cannot spend it.

The sample can lie about its own values, exactly as a program can return any value; it cannot
make a false assertion true, because it never sees the assertion's expected side and never runs
the comparison.
"""

from __future__ import annotations

import json
import os
import reprlib
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from tasks.config.recipe import SandboxLimits
from tasks.verify.sandbox.checks import CheckFailed, Evaluator, RemoteRaised, Step, UnsupportedTest, plan_tests
from tasks.verify.sandbox import cgroup
from tasks.verify.sandbox.host import SandboxUnavailable, bwrap_command, check_host, sandbox_ids, tmp_bytes
from tasks.verify.sandbox.seccomp import program_fd
from tasks.verify.sandbox.wire import MAX_REPLY_BYTES, WireError, decode_reply

Status = Literal["passed", "failed", "timeout", "memory", "error", "blocked"]
RUNNER = Path(__file__).with_name("child.py")  # its text is passed with -c: never imported
_TAIL_BYTES = 2000
_STDERR_CAP = 256 * 1024  # bytes of the sample's stderr read at most; then the pipe is closed
_WATCHDOG = 124  # `timeout` exits with this when it killed the sandbox at its hard limit
_RAISED: dict[str, Status] = {"AssertionError": "failed", "MemoryError": "memory"}
_SIGNALLED = 128  # bwrap exits with 128 + the signal that ended the sandboxed process

__all__ = ["SandboxResult", "SandboxUnavailable", "UnsupportedTest", "require_sandbox", "run_tests"]


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    seconds: float
    stderr_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class _Ended(Exception):
    """The runner stopped answering: it exited, closed its pipes, or the deadline passed."""

    def __init__(self, timed_out: bool) -> None:
        super().__init__("deadline" if timed_out else "end of output")
        self.timed_out = timed_out


class _NotStarted(Exception):
    """The sandbox ended before its runner said it was ready: a host problem, never the sample's doing."""


def _run_delay(pid: int | None) -> float:
    """Seconds `pid` has spent runnable but waiting for a CPU (the scheduler's run_delay), 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


class _Clock:
    """The sample's own wall time, so that neither the verifier nor a neighbour can spend it.

    It runs only while the verifier waits on the sample (not while the verifier decodes, checks, or
    waits for the GIL), and time the sample's process spent runnable without a CPU is given back.
    `hard` is the real time at which the watchdog process kills the sandbox whatever happens here."""

    def __init__(self, limit: float, start: float) -> None:
        self.limit, self.used, self.credited, self.runner = limit, 0.0, 0.0, None
        self.hard = start + limit + _slack(limit)

    def left(self) -> float:
        if self.used >= self.limit:  # before giving up, give back the time the CPU was taken from it
            delay = _run_delay(self.runner)
            self.used -= max(0.0, delay - self.credited)
            self.credited = max(self.credited, delay)
        return min(self.limit - self.used, self.hard - time.monotonic())


def _slack(limit: float) -> float:
    """Real time beyond the wall limit a sample may be given back (its wait for a CPU, a busy verifier)."""
    return 1.5


class _Stderr:
    """The sample's stderr: a pipe read here, of which the last _TAIL_BYTES are kept and at most
    _STDERR_CAP bytes read; then it is closed (the sample's writes fail). Never a file on the host."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        os.set_blocking(fd, False)
        self.tail = bytearray()
        self.total = 0

    def drain(self) -> None:
        while self.fd is not None:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk or self.total + len(chunk) > _STDERR_CAP:
                self.close()
                return
            self.total += len(chunk)
            self.tail += chunk
            del self.tail[:-_TAIL_BYTES]

    def finish(self, seconds: float) -> str:
        """The rest of what the (now killed) sandbox wrote, waiting at most `seconds` for its end."""
        end = time.monotonic() + seconds
        while self.fd is not None and (left := end - time.monotonic()) > 0:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(left * 1000):
                break
            self.drain()
        self.close()
        return self.tail.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Channel:
    """Line-framed JSON requests and replies over the runner's stdin/stdout, on the sample's clock."""

    def __init__(self, proc: subprocess.Popen, clock: _Clock, err: _Stderr) -> None:
        self.out, self.inp, self.clock, self.err = proc.stdin.fileno(), proc.stdout.fileno(), clock, err  # type: ignore
        os.set_blocking(self.out, False)
        os.set_blocking(self.inp, False)
        self.buffer = bytearray()

    def _wait(self, fd: int, event: int) -> None:
        while True:
            poller = select.poll()
            poller.register(fd, event | select.POLLHUP | select.POLLERR)
            if self.err.fd is not None:
                poller.register(self.err.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            left = self.clock.left()
            began = time.monotonic()
            ready = poller.poll(max(0.0, left) * 1000)
            self.clock.used += time.monotonic() - began
            if any(f == self.err.fd for f, _ in ready):
                self.err.drain()
            if any(f == fd for f, _ in ready):
                return
            if not ready and left <= 0:
                raise _Ended(timed_out=True)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        return self.recv()

    def send(self, request: dict[str, Any]) -> None:
        data = memoryview(json.dumps(request, ensure_ascii=True).encode() + b"\n")
        while data:
            self._wait(self.out, select.POLLOUT)
            try:
                data = data[os.write(self.out, data):]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise _Ended(timed_out=False) from None

    def recv(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_REPLY_BYTES:
                raise WireError(f"reply larger than {MAX_REPLY_BYTES} bytes")
            self._wait(self.inp, select.POLLIN)
            try:
                chunk = os.read(self.inp, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                raise _Ended(timed_out=False)
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return decode_reply(line)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 12


def _show(value: Any) -> str:
    """A short repr of a decoded value for the failure message (bounded work, even for huge values)."""
    try:
        return _REPR.repr(value)
    except ValueError:  # an integer past Python's digit limit for str()
        return "<a value too large to show>"


def _raised(name: str, tail: str) -> tuple[Status, str]:
    return _RAISED.get(name, "error"), tail or name


def _check_all(chan: _Channel, code: str, steps: list[Step], on_ready: Callable[[], None]) -> tuple[Status, str]:
    try:
        ready = chan.recv()  # sent by the runner before it reads anything of the sample
    except _Ended as ended:
        if ended.timed_out:
            raise
        raise _NotStarted from None
    if ready != {"ready": True}:
        raise WireError("the runner did not start with a ready line")
    on_ready()  # into its cgroup before any of the sample's code is sent
    reply = chan.ask({"op": "exec", "src": code, "name": "<sample>"})
    if "raised" in reply:
        return _raised(reply["raised"], reply["tail"])

    def remote(source: str) -> Any:
        answer = chan.ask({"op": "eval", "src": source})
        if "raised" in answer:
            raise RemoteRaised(answer["raised"], answer["tail"])
        return answer["value"]

    evaluator = Evaluator(remote)
    for step in steps:
        try:
            if step.kind == "exec":
                reply = chan.ask({"op": "exec", "src": step.source, "name": "<test>"})
                if "raised" in reply:
                    return _raised(reply["raised"], reply["tail"])
            elif step.kind == "bind":
                evaluator.bind(step)
            else:
                evaluator.check(step)
        except (_Ended, WireError):
            raise
        except RemoteRaised as exc:
            return _raised(exc.name, exc.tail)
        except CheckFailed as exc:
            seen = "; ".join(f"{src} returned {_show(value)}" for src, value in evaluator.seen)
            return "failed", f"AssertionError: {step.source}\n({exc}{': ' + seen if seen else ''})"
        except Exception as exc:  # noqa: BLE001 - a test that fails on plain values, e.g. 1 < "a"
            return "error", f"{type(exc).__name__}: {str(exc)[:200]} (in {step.source})"
    return "passed", ""


def _after_exit(proc: subprocess.Popen, ended: _Ended, clock: _Clock) -> tuple[Status, str]:
    """The verdict when the runner stopped answering: from how (and whether) it ended in its time."""
    if not ended.timed_out:
        try:
            proc.wait(timeout=max(0.0, clock.left()))
        except subprocess.TimeoutExpired:  # closed its pipes and kept running
            return "timeout", "sandbox: wall-clock limit"
    if ended.timed_out or proc.returncode is None:
        return "timeout", "sandbox: wall-clock limit"
    code = proc.returncode
    if code == _SIGNALLED + signal.SIGSYS:
        return "blocked", "sandbox: blocked a forbidden system call"
    if code in (_SIGNALLED + signal.SIGXCPU, _SIGNALLED + signal.SIGKILL):
        return "timeout", "sandbox: CPU time limit"
    if code == _WATCHDOG:
        return "timeout", "sandbox: wall-clock limit"
    return "error", f"sandbox: the sample's process exited (status {code}) before its tests were checked"


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the watchdog and bwrap; the PID namespace dies with its first process
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass  # a process in uninterruptible sleep: the kernel reaps it later; the verdict stands


def _tree(pid: int) -> list[int]:
    """`pid` and every process below it (the watchdog, bwrap, its namespace's init, the runner)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return found


class _Lost(Exception):
    """The sandbox was killed at its hard limit while the sample still had time of its own: the
    verifier (or the host), not the sample, was the hold-up, so the run says nothing about the sample."""


def _run(code: str, steps: list[Step], limits: SandboxLimits) -> SandboxResult:
    runner = json.dumps(limits.model_dump(include={"cpu_seconds", "memory_mb", "file_size_mb"}))
    ids = sandbox_ids()
    user = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    try:
        jail = cgroup.for_sample(limits.memory_mb, tmp_bytes(limits), limits.workers or os.cpu_count() or 1)
    except cgroup.CgroupError as exc:
        raise _NotStarted(str(exc)) from None
    start = time.monotonic()
    clock = _Clock(limits.wall_seconds, start)
    seccomp = program_fd()
    err_read, err_write = os.pipe()
    try:
        argv = ["timeout", "--foreground", "--signal=KILL", f"{clock.hard - start:.3f}",
                *bwrap_command(limits, seccomp, ["-s", "-P", "-B", "-c", RUNNER.read_text(), runner])]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_write, cwd="/",
                                pass_fds=(seccomp,), close_fds=True, process_group=0,
                                env={"PATH": os.defpath}, **user)  # bwrap's own pid 1 holds no secrets
    except BaseException:
        os.close(err_read)
        if jail:
            jail.close()
        raise
    finally:
        os.close(seccomp)
        os.close(err_write)
    err = _Stderr(err_read)

    def ready() -> None:
        tree = _tree(proc.pid)
        clock.runner = tree[-1] if len(tree) > 1 else None
        if jail:
            jail.enter(tree)

    not_started = lost = False
    status, message = "error", ""
    try:
        try:
            status, message = _check_all(_Channel(proc, clock, err), code, steps, ready)
        except _NotStarted:
            not_started = True
        except cgroup.CgroupError as exc:
            not_started, message = True, str(exc)
        except _Ended as ended:
            status, message = _after_exit(proc, ended, clock)
            lost = status == "timeout" and clock.used < clock.limit and time.monotonic() >= clock.hard - 0.05
        except WireError as exc:
            status, message = "error", f"sandbox: unreadable reply ({exc})"
    finally:
        _kill(proc)
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()  # type: ignore[union-attr]
            except OSError:
                pass
        tail = err.finish(1.0 if not_started else 0.05)  # bwrap's own message comes last
        if jail:
            if not not_started and status != "passed" and jail.oom_kills():
                status, message = "memory", "sandbox: the sample's cgroup ran out of memory"
            jail.close()
    seconds = time.monotonic() - start
    if not_started:
        lines = tail.strip().splitlines() or [message or f"exit status {proc.returncode}"]
        raise _NotStarted(next((ln for ln in lines if ln.startswith("bwrap:")), lines[-1]).strip()[:200])
    if lost:
        raise _Lost
    return SandboxResult(status=status, seconds=round(seconds, 3), stderr_tail=f"{tail}\n{message}".strip())


_ready = threading.Event()
_ready_lock = threading.Lock()


def require_sandbox() -> None:
    """Fail closed: raise SandboxUnavailable (one line, with the fix) unless a trial sandbox works."""
    if _ready.is_set():
        return
    with _ready_lock:
        if _ready.is_set():
            return
        check_host()
        try:
            trial = _run("def probe():\n    return 1\n", plan_tests(["assert probe() == 1"]), SandboxLimits())
        except _NotStarted as exc:
            reason = str(exc)
            userns = any(word in reason for word in ("namespace", "Operation not permitted", "No permissions"))
            raise SandboxUnavailable(
                f"a trial sandbox did not start ({reason})",
                "allow unprivileged user namespaces (sysctl user.max_user_namespaces=15000; Debian kernels "
                "also kernel.unprivileged_userns_clone=1, Ubuntu 24.04 kernel.apparmor_restrict_unprivileged_"
                "userns=0; in a container, a seccomp profile that allows unshare)." if userns else
                "see the bwrap message; the README's sandbox section lists what the host needs.") from None
        if trial.status != "passed":
            raise SandboxUnavailable(f"a trial sandbox did not pass a trivial test ({trial.status}: "
                                     f"{trial.stderr_tail[-200:]})",
                                     "see the message; the README's sandbox section lists what the host needs.")
        _ready.set()


def run_tests(code: str, tests: list[str], limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` in a sandbox and check `tests` (statements; asserts are checked here) against it.

    passed: every assert held; failed: one was false (or the code raised AssertionError); error: any
    other exception (syntax errors, `exit()` before the tests, values that are not plain data in a
    comparison's place count as failed); memory: MemoryError; timeout: the CPU or wall limit;
    blocked: the seccomp filter ended the process. Raises UnsupportedTest for tests that cannot be
    checked here and SandboxUnavailable where the host cannot isolate the code."""
    steps = plan_tests(tests)
    require_sandbox()
    try:
        try:
            return _run(code, steps, limits)
        except _Lost:  # the watchdog's limit is real time: a host busier than 2 s beyond the limit ends it
            return SandboxResult("timeout", limits.wall_seconds + _slack(limits.wall_seconds),
                                 "sandbox: wall-clock limit (killed by the watchdog while the host, not the "
                                 "sample, was busy)")
    except _NotStarted as exc:  # it worked for the trial: something on the host ran out
        raise SandboxUnavailable(f"a sandbox stopped starting ({exc})",
                                 "check user.max_user_namespaces, free memory and disk, then run again; "
                                 "no verdict was recorded for this sample.") from None
