"""Kernel bounds on what samples take from the host beyond their rlimits: one cgroup per sample.

RLIMIT_AS counts only what is mapped into the sample's address space. Memory that lives in the
kernel or in a file system (a filled memfd, System V shared memory, tmpfs pages and inodes, pipe
buffers, kernel objects) is not mapped there, but the memory controller charges all of it to the
cgroup of the process that allocated it. So every sandbox runs in its own cgroup under one parent
per verifier process:

    <the verifier's own cgroup>/flywheel-sandbox-<pid>/       memory and pids: every sample together
    <the verifier's own cgroup>/flywheel-sandbox-<pid>/s<n>/  memory and pids: one sample

with a memory limit of `memory_mb` + its /tmp + 32 MiB, no swap, and 16 tasks (the sample itself
cannot create any: seccomp kills fork and clone). Where the cpu controller is there too, the
parent's weight is a quarter of a normal group's, so samples never starve the verifier's own
threads. The processes are moved in when the runner says it is ready, before the verifier sends
the sample's code: nothing of the sample runs outside the cgroup, and what the interpreter's start
allocated stays with the verifier.

Where the cgroups are (in order): FLYWHEEL_SANDBOX_CGROUP, a cgroup v2 directory with the memory
and pids controllers delegated (`off` turns cgroups off); the verifier's own cgroup v2 when memory
and pids are enabled (or can be enabled) for its children; the verifier's own v1 memory and pids
cgroups when it may create children there (as root, or delegated). Else one logged warning, and
the sandbox relies on its fallback alone (tasks/verify/sandbox/host.py; the README's threat model
lists what that does not bound).
"""

from __future__ import annotations

import atexit
import errno
import functools
import itertools
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "FLYWHEEL_SANDBOX_CGROUP"
MiB = 1024 * 1024
SLACK_BYTES = 32 * MiB  # page tables, kernel objects, the two bwrap processes
TASKS = 16  # timeout, two bwrap, the interpreter: the sample can create none
CPU_SHARES = 256  # v1: 1024 is a normal group's
CPU_WEIGHT = 25  # v2: 100 is a normal group's
_counter = itertools.count()
_lock = threading.Lock()


class CgroupError(OSError):
    """A cgroup could not be created, filled or removed."""


@dataclass(frozen=True)
class Layout:
    """Where the parents live: {controller: directory}; `v2` when one unified hierarchy holds them all."""

    v2: bool
    dirs: dict[str, Path]

    def describe(self) -> str:
        return ("cgroup v2 " if self.v2 else "cgroup v1 ") + ", ".join(f"{c} at {d}" for c, d in self.dirs.items())


def _own_paths() -> dict[str, str]:
    """{controller (or '' for v2): this process's cgroup path} from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _mounts() -> dict[str, Path]:
    """{controller (or '' for cgroup2): mount point} from /proc/self/mountinfo."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        point = Path(fields[4].replace("\\040", " "))
        if extra[0] == "cgroup2":
            mounts.setdefault("", point)
        elif extra[0] == "cgroup":
            for opt in extra[2].split(","):
                if opt in ("memory", "pids", "cpu"):
                    mounts.setdefault(opt, point)
    return mounts


def _v2_base(base: Path) -> Path | None:
    """`base` when its children can have memory and pids limits (enabling them where allowed)."""
    try:
        available = (base / "cgroup.controllers").read_text().split()
        if not {"memory", "pids"} <= set(available):
            return None
        enabled = set((base / "cgroup.subtree_control").read_text().split())
        wanted = {"memory", "pids"} | ({"cpu"} & set(available))
        missing = wanted - enabled
        if missing:  # refused (EBUSY) when the cgroup holds processes and is not the root
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(missing)))
        return base if {"memory", "pids"} <= set((base / "cgroup.subtree_control").read_text().split()) else None
    except OSError:
        return None


def _probe(layout: Layout) -> bool:
    """Whether a child cgroup can be made (and removed again) under every parent directory."""
    for d in layout.dirs.values():
        probe = d / f"flywheel-probe-{os.getpid()}-{next(_counter)}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            return False
    return True


@functools.cache
def layout() -> Layout | None:
    """Where this process's sandbox cgroups go, or None (after one warning) where there is nowhere."""
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() == "off":
        log.warning("sandbox cgroups are off (%s=off): samples are bounded by rlimits, seccomp and the "
                    "tmpfs size only; memory outside their address space is not bounded", ENV)
        return None
    candidates: list[Layout] = []
    try:
        if setting:
            base = _v2_base(Path(setting))
            if base is None:
                log.warning("%s=%s is not a cgroup v2 directory with the memory and pids controllers delegated",
                            ENV, setting)
            else:
                candidates.append(Layout(True, {"": base}))
        else:
            own, mounts = _own_paths(), _mounts()
            if "" in mounts and "" in own:
                base = _v2_base(mounts[""] / own[""].lstrip("/"))
                if base is not None:
                    candidates.append(Layout(True, {"": base}))
            if "memory" in mounts and "pids" in mounts and "memory" in own and "pids" in own:
                dirs = {c: mounts[c] / own[c].lstrip("/") for c in ("memory", "pids")}
                if "cpu" in mounts and "cpu" in own:
                    dirs["cpu"] = mounts["cpu"] / own["cpu"].lstrip("/")
                candidates.append(Layout(False, dirs))
    except (OSError, ValueError):
        pass
    for found in candidates:
        if _probe(found):
            return found
        if "cpu" in found.dirs:  # the cpu controller is a nicety: go on without it
            without = Layout(found.v2, {c: d for c, d in found.dirs.items() if c != "cpu"})
            if _probe(without):
                return without
    log.warning("no cgroup for the code sandbox (neither cgroup v2 with memory and pids delegated nor writable "
                "v1 memory and pids hierarchies; set %s to a delegated cgroup v2 directory): samples are "
                "bounded by rlimits, seccomp and the tmpfs size only, and memory outside their address space "
                "(tmpfs inodes, pipe buffers, kernel objects) is not bounded", ENV)
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_int(path: Path, key: str | None = None) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    if key is None:
        return int(text.split()[0]) if text.strip() and text.split()[0].isdigit() else 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _rmdir(path: Path, wait: float) -> bool:
    end = time.monotonic() + wait
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:  # EBUSY while the killed processes are still on their way out
            if exc.errno != errno.EBUSY or time.monotonic() > end:
                return False
            time.sleep(0.005)


def _set_memory(d: Path, v2: bool, limit: int) -> None:
    if v2:
        _write(d / "memory.max", str(limit))
        try:
            _write(d / "memory.swap.max", "0")
        except FileNotFoundError:  # no swap accounting: nothing to swap to
            pass
        return
    # memory and swap together, so no swap; memsw may never be below memory: when raising, it goes first
    for name in ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
        try:
            _write(d / name, str(limit))
        except OSError:
            if name == "memory.limit_in_bytes":
                raise
            # memsw: swap accounting off (or the first try, when lowering)


class _Parent:
    """flywheel-sandbox-<pid> under each controller: every sample of this process together."""

    def __init__(self, found: Layout) -> None:
        self.layout = found
        self.dirs = {c: d / f"flywheel-sandbox-{os.getpid()}" for c, d in found.dirs.items()}
        self.memory_limit = 0
        self.tasks_limit = 0
        for c, d in self.dirs.items():
            _sweep(found.dirs[c])
            d.mkdir(exist_ok=True)
        if found.v2:
            try:
                d = self.dirs[""]
                _write(d / "cgroup.subtree_control", "+memory +pids")
                if "cpu" in (d / "cgroup.controllers").read_text().split():
                    _write(d / "cgroup.subtree_control", "+cpu")
                    _write(d / "cpu.weight", str(CPU_WEIGHT))
            except OSError as exc:
                raise CgroupError(exc.errno, f"the sandboxes' cgroup refused its controllers ({exc})") from None
        elif "cpu" in self.dirs:
            _write(self.dirs["cpu"] / "cpu.shares", str(CPU_SHARES))
        atexit.register(self.remove)

    def widen(self, memory: int, tasks: int) -> None:
        """Raise the parent's limits to cover `memory` bytes and `tasks` tasks for all samples together."""
        if memory > self.memory_limit:
            _set_memory(self.memory_dir, self.layout.v2, memory)
            self.memory_limit = memory
        if tasks > self.tasks_limit:
            _write(self.pids_dir / "pids.max", str(tasks))
            self.tasks_limit = tasks

    @property
    def memory_dir(self) -> Path:
        return self.dirs["" if self.layout.v2 else "memory"]

    @property
    def pids_dir(self) -> Path:
        return self.dirs["" if self.layout.v2 else "pids"]

    def remove(self) -> None:
        for d in self.dirs.values():
            for child in d.glob("s*"):
                if child.is_dir():
                    _rmdir(child, 0.5)
            _rmdir(d, 0.5)


def _sweep(base: Path) -> None:
    """Remove what a verifier process that is gone left behind (it died before its atexit)."""
    for d in base.glob("flywheel-sandbox-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        for child in d.glob("s*"):
            if child.is_dir():
                _rmdir(child, 0)
        _rmdir(d, 0)


_parent: _Parent | None = None


def _the_parent(found: Layout) -> _Parent:
    global _parent
    with _lock:
        if _parent is None:
            try:
                _parent = _Parent(found)
            except OSError as exc:
                raise CgroupError(exc.errno, f"the sandboxes' cgroup cannot be made ({exc})") from None
        return _parent


def sample_limit(memory_mb: int, tmp_bytes: int) -> int:
    """Bytes one sample's cgroup may hold: its address space, its /tmp, and the kernel's share."""
    return memory_mb * MiB + tmp_bytes + SLACK_BYTES


class SampleCgroup:
    """One sample's cgroup (a directory per hierarchy); `enter` moves the sandbox's processes in."""

    def __init__(self, found: Layout, memory_limit: int, slots: int) -> None:
        parent = _the_parent(found)
        self.v2 = found.v2
        self.cpu_dir = parent.dirs.get("cpu")
        name = f"s{next(_counter)}"
        self.dirs: list[Path] = []
        try:
            with _lock:
                parent.widen(memory_limit * slots, TASKS * slots)
            for d in ([parent.dirs[""]] if found.v2 else [parent.dirs["memory"], parent.dirs["pids"]]):
                (d / name).mkdir()
                self.dirs.append(d / name)
            self.memory_dir = self.dirs[0]
            self.pids_dir = self.dirs[-1]
            _set_memory(self.memory_dir, found.v2, memory_limit)
            _write(self.pids_dir / "pids.max", str(TASKS))
        except OSError as exc:
            self.close()
            raise CgroupError(exc.errno, f"a sample's cgroup cannot be made ({exc})") from None

    def enter(self, pids: list[int]) -> None:
        """Move `pids` (every process of the sandbox) into this cgroup; raises CgroupError."""
        for pid in pids:
            for d in self.dirs + ([self.cpu_dir] if self.cpu_dir and not self.v2 else []):
                try:
                    _write(d / "cgroup.procs", str(pid))
                except ProcessLookupError:  # already gone: nothing of it can run the sample's code
                    break
                except OSError as exc:
                    raise CgroupError(exc.errno, f"a sandbox process could not enter its cgroup ({exc})") from None

    def oom_kills(self) -> int:
        """How often the kernel killed a process here for exceeding the memory limit."""
        if self.v2:
            return _read_int(self.memory_dir / "memory.events", "oom_kill")
        return _read_int(self.memory_dir / "memory.oom_control", "oom_kill")

    def peak_bytes(self) -> int:
        return _read_int(self.memory_dir / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes"))

    def close(self) -> None:
        """Remove the cgroup once its processes are gone (after the sandbox was killed), off the
        sample's thread: the killed processes take a few milliseconds to leave, and a verdict
        need not wait for that."""
        if self.dirs:
            _reaper().put(list(self.dirs))
            self.dirs = []


@functools.cache
def _reaper() -> queue.SimpleQueue[list[Path]]:
    todo: queue.SimpleQueue[list[Path]] = queue.SimpleQueue()

    def loop() -> None:
        while True:
            for d in todo.get():
                _rmdir(d, 2.0)  # a directory left behind is swept with its parent at exit

    threading.Thread(target=loop, name="sandbox-cgroup-reaper", daemon=True).start()
    return todo


def for_sample(memory_mb: int, tmp_bytes: int, slots: int) -> SampleCgroup | None:
    """A fresh cgroup for one sample, or None where this host has none (see `layout`)."""
    found = layout()
    if found is None:
        return None
    return SampleCgroup(found, sample_limit(memory_mb, tmp_bytes), max(1, slots))


def parent_peak_bytes() -> int:
    """The most memory all samples of this process held at once (0 without cgroups)."""
    if _parent is None:
        return 0
    return _read_int(_parent.memory_dir / ("memory.peak" if _parent.layout.v2 else "memory.max_usage_in_bytes"))


def parent_usage_bytes() -> int:
    """What all samples of this process hold now (0 without cgroups, or when none runs)."""
    if _parent is None:
        return 0
    return _read_int(_parent.memory_dir / ("memory.current" if _parent.layout.v2 else "memory.usage_in_bytes"))
