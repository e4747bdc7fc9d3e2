"""Run untrusted Python (a model's code plus its unit tests) in a contained child process.

What each run gets:
- a separate interpreter (`python -s -P -B` with an environment built from scratch: no proxies,
  no credentials, no PYTHON* variables except a fixed hash seed, so results are reproducible);
- a fresh temporary working directory, removed afterwards (it is also the child's HOME and TMPDIR);
- resource limits the child sets on itself before any sample code is read, soft = hard so they
  cannot be raised again: CPU time, address space, file size, open files, no core dumps, and no
  new processes or threads (RLIMIT_NPROC; the kernel does not enforce it for root);
- a wall-clock timeout, after which the whole process group is killed;
- no network: an empty network namespace (`unshare --user --net`) where the kernel allows
  unprivileged user namespaces, and in any case an audit hook (`sys.addaudithook`, see
  tasks/sandbox_child.py) that ends the process on any socket operation, on opening a file outside
  the temporary directory (reading the Python installation is allowed), on deleting, renaming,
  creating or changing anything outside it, and on starting processes (fork, exec, spawn,
  subprocess, os.system), sending signals, loading ctypes or raising limits.

Threat model, honestly: this contains the mistakes a code model makes (infinite loops, runaway
memory, stray file writes, forgotten network calls, `exit()`), and it makes casual escapes
fail loudly. It is not a security boundary against a determined attacker: audit hooks run inside
the attacked interpreter, so a bug in CPython or a C extension, or introspection of the
interpreter's own objects, can get around them, and a process running as root keeps root's file
permissions wherever the hook is bypassed. Run code you do not trust, at scale, in a container
or a gVisor/Firecracker sandbox as an unprivileged user, with this module as defence in depth.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tasks.config import SandboxLimits

Status = Literal["passed", "failed", "timeout", "memory", "error", "blocked"]
CHILD = Path(__file__).with_name("sandbox_child.py")
# Exit statuses of sandbox_child.py
_EXIT_STATUS: dict[int, Status] = {1: "failed", 2: "error", 3: "memory", 4: "blocked"}
_TAIL_BYTES = 2000


@dataclass(frozen=True)
class SandboxResult:
    status: Status
    seconds: float
    stderr_tail: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace_available() -> bool:
    """Whether this kernel lets an unprivileged process enter a new user + network namespace."""
    if not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--net", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
            "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    """Remove the working directory, even where the sample took its own permissions away."""
    try:
        shutil.rmtree(path)
    except OSError:
        os.chmod(path, 0o700)
        for parent, dirs, _ in os.walk(path):  # top-down: each directory is unlocked before it is entered
            for d in dirs:
                if not os.path.islink(os.path.join(parent, d)):  # chmod would follow a link
                    os.chmod(os.path.join(parent, d), 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _status(returncode: int, timed_out: bool, tail: str, nonce: str) -> Status:
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in tail:
        # SIGXCPU/SIGKILL without our kill: the CPU limit (an out-of-memory kill leaves no traceback either,
        # but RLIMIT_AS makes allocations fail with MemoryError long before that)
        return "timeout"
    if returncode == 0:
        return "passed" if tail.rstrip().endswith(nonce) else "error"  # exited early without running the tests
    if returncode in _EXIT_STATUS:
        return _EXIT_STATUS[returncode]
    return "memory" if "MemoryError" in tail else "error"


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` (a whole program: the sample's code followed by its tests) under `limits`.

    Passed means the program ran to its end; failed, an AssertionError; error, any other exception
    (syntax errors, `exit()`); memory, a MemoryError; timeout, the CPU or wall limit; blocked, a
    forbidden operation (see the module docstring)."""
    nonce = secrets.token_hex(16)
    request = json.dumps({"code": code, "nonce": nonce, "limits": limits.model_dump(exclude={"workers"})})
    prefix = ["unshare", "--user", "--map-root-user", "--net", "--"] if network_namespace_available() else []
    argv = [*prefix, sys.executable, "-s", "-P", "-B", str(CHILD)]
    workdir = tempfile.mkdtemp(prefix="flywheel-sandbox-")
    try:
        with tempfile.TemporaryFile() as err:
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, cwd=workdir,
                                    env=_child_env(workdir), process_group=0, close_fds=True)
            timed_out = False
            try:
                proc.communicate(request.encode(), timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc.pid)  # also whatever the child may have left behind
                proc.wait()
            seconds = time.monotonic() - start
            size = err.seek(0, os.SEEK_END)
            err.seek(max(0, size - _TAIL_BYTES))
            tail = err.read().decode("utf-8", errors="replace")
    finally:
        _remove_tree(workdir)
    status = _status(proc.returncode, timed_out, tail, nonce)
    return SandboxResult(status=status, seconds=round(seconds, 3), stderr_tail=tail.replace(nonce, "").strip())
