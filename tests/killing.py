"""Kill a real `flywheel run` at real moments, then check that nothing half-written was kept.

Moments are found by watching the filesystem with inotify (Linux), never by hooks in shipped
code: the atomic writers' `.name.tmp-PID` files, DVC's lock file and cache, new objects in the
remote, `.git/index.lock` and tag lock files. On the event, the run's whole process group gets
SIGKILL after a seeded random delay (0 to a few ms), so the kill lands inside the write.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE, IN_ISDIR = 0x2, 0x8, 0x80, 0x100, 0x40000000
WATCH_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
_EVENT = struct.Struct("iIII")
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
TEMP_NAME = re.compile(r"(\.tmp-\d+$|\.old-\d+$|\.tmp$)")  # ours (.name.tmp-PID), DVC's (.token.tmp)
LOCK_NAME = re.compile(r"\.lock$")
OBJECT_NAME = re.compile(r"^[0-9a-f]{30}(\.dir)?$")


@dataclass(frozen=True)
class Event:
    path: Path
    mask: int

    @property
    def created(self) -> bool:
        return bool(self.mask & IN_CREATE)

    @property
    def modified(self) -> bool:
        return bool(self.mask & IN_MODIFY)


class Watcher:
    """Recursive inotify watch over a few trees; folders created later are watched as they appear."""

    def __init__(self, roots: list[Path]) -> None:
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.dirs: dict[int, Path] = {}
        for root in roots:
            self.add_tree(root)

    def add_tree(self, root: Path) -> list[Event]:
        """Watch `root` and every folder under it; entries that appeared before the watch was in
        place are returned as created, so a fast writer in a new folder is never missed."""
        if not root.is_dir() or root in self.dirs.values():
            return []
        self._add(root)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                self._add(Path(dirpath) / name)
            found += [Event(Path(dirpath) / n, IN_CREATE | (IN_ISDIR if n in dirnames else 0))
                      for n in dirnames + filenames]
        return found

    def _add(self, path: Path) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)
        if wd >= 0:
            self.dirs[wd] = path

    def events(self, timeout: float) -> list[Event]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            buf = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out, pos = [], 0
        while pos < len(buf):
            wd, mask, _, size = _EVENT.unpack_from(buf, pos)
            name = buf[pos + _EVENT.size: pos + _EVENT.size + size].rstrip(b"\0").decode(errors="replace")
            pos += _EVENT.size + size
            if wd in self.dirs:
                path = self.dirs[wd] / name if name else self.dirs[wd]
                out.append(Event(path, mask))
                if mask & IN_ISDIR and mask & IN_CREATE:
                    out += self.add_tree(path)
        return out

    def close(self) -> None:
        os.close(self.fd)


BOOTSTRAP_STEPS = ("prepare", "base", "warmup", "baseline", "reward")
ITERATION_STEPS = ("calibrate", "generate", "score", "select", "check", "train", "evaluate", "promote")


def step_rank(step: str | None) -> tuple[int, int]:
    """Where a progress step comes in a run: (iteration, position); `finish@N` ends iteration N."""
    if not step:
        return (-1, -1)
    name, _, it = step.partition("@")
    if name == "finish":
        return (int(it), 100)
    if it:
        return (int(it), ITERATION_STEPS.index(name))
    return (0, BOOTSTRAP_STEPS.index(name)) if name in BOOTSTRAP_STEPS else (-1, -1)


def read_step(ws: Path) -> str | None:
    try:
        return json.loads((ws / ".flywheel" / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


@dataclass
class KillPoint:
    """Where to SIGKILL a run. Three ways to find the moment:

    - `trigger`: from outside, on the `nth` filesystem event it accepts while the run reports
      `step`, after a seeded random delay of up to `max_delay` s (real timing: the write may
      have finished by the time the signal lands; `Kill.left` shows what it hit);
    - `within`: from outside, at a seeded random time up to that many seconds into `step`;
    - `hook`: from inside, exactly at an audit event (tests/kill_hook/sitecustomize.py), for
      moments too short to hit from outside (between DVC's unlink and rename, before `git tag`).
    """

    name: str
    step: str
    trigger: Callable[[Path, Event], bool] | None = None
    nth: int = 1
    max_delay: float = 0.001
    within: float | None = None
    hook: str | None = None


@dataclass
class Kill:
    point: str
    landed: bool  # False: the moment never came (the step ended first); the run was killed after it
    event: str | None = None
    delay: float = 0.0
    left: list[str] = field(default_factory=list)  # temp and lock files present just after the kill


HOOK_DIR = Path(__file__).resolve().parent / "kill_hook"


def start_run(ws: Path, recipe: Path, iterations: int, hook: str | None = None) -> subprocess.Popen:
    """`flywheel run` as the leader of its own process group (stage processes, git and DVC children,
    Prefect's server all in it); its output is appended to runs.log beside the workspace."""
    cmd = [sys.executable, "-m", "flywheel", "run", "-w", str(ws), "-c", str(recipe), "-n", str(iterations)]
    (ws / ".flywheel" / "progress.json").unlink(missing_ok=True)  # the last run's step is not this run's
    env = dict(os.environ)
    if hook:
        env |= {"FLYWHEEL_TEST_KILL": hook, "PYTHONPATH": os.pathsep.join(
            p for p in (str(HOOK_DIR), env.get("PYTHONPATH")) if p)}
    with (ws.parent / "runs.log").open("a") as log:
        log.write(f"\n=== {' '.join(cmd[2:])}{f' (kill at {hook})' if hook else ''}\n")
        log.flush()
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_until(ws: Path, remote: Path, recipe: Path, point: KillPoint, rng: random.Random, target: int = 2,
              timeout: float = 900) -> Kill:
    """Run towards `target` tagged iterations and SIGKILL the process group at `point`. If the step
    ends before its moment came, the run is killed at the next step (landed=False), so a campaign
    always stays in order."""
    ws.mkdir(parents=True, exist_ok=True)  # watched from the start, before `flywheel run` creates it
    iterations = max(target - finished_iterations(ws), 1)
    it = point.step.partition("@")[2] or "0000"
    if (ws / ".git").is_dir() and f"iter-{it}" in git(ws, "tag", "--list").split():
        return Kill(point.name, False, "already past: its iteration is tagged")
    if point.hook:
        return _run_hooked(ws, remote, recipe, point, iterations, timeout)
    watcher = Watcher([ws, remote]) if remote.is_dir() else Watcher([ws])
    progress = ws / ".flywheel" / "progress.json"
    proc = start_run(ws, recipe, iterations)
    seen, reached, at, step, deadline = 0, False, None, None, time.monotonic() + timeout

    def killed(landed: bool, what: str, delay: float = 0.0) -> Kill:
        kill_group(proc)
        return Kill(point.name, landed, what, delay, leftovers(ws, remote))

    try:
        while time.monotonic() < deadline and proc.poll() is None:
            wait = 0.05 if at is None else max(0.0, min(0.05, at - time.monotonic()))
            for ev in watcher.add_tree(remote) + watcher.events(wait):
                if ev.path == progress or step is None:  # read only when it changed: kill latency
                    step = read_step(ws)
                if (reached and step != point.step) or step_rank(step) > step_rank(point.step):
                    return killed(False, f"missed; killed at {step}")
                if step == point.step and not reached:
                    reached = True
                    if point.within is not None:
                        delay = rng.uniform(0, point.within)
                        at = time.monotonic() + delay
                if point.trigger and step == point.step and point.trigger(ws, ev):
                    seen += 1
                    if seen == point.nth:
                        delay = rng.uniform(0, point.max_delay)
                        time.sleep(delay)
                        return killed(True, str(ev.path.relative_to(ws.parent)), delay)
            if at is not None and time.monotonic() >= at:
                now = read_step(ws)
                return killed(now == point.step, f"timed, during {now}", delay)
        return Kill(point.name, False, "the run ended first")
    finally:
        kill_group(proc)
        watcher.close()


def _run_hooked(ws: Path, remote: Path, recipe: Path, point: KillPoint, iterations: int, timeout: float) -> Kill:
    proc = start_run(ws, recipe, iterations, hook=point.hook)
    try:
        proc.wait(timeout)
    finally:
        kill_group(proc)
    step = read_step(ws)
    landed = proc.returncode == -signal.SIGKILL and step == point.step
    return Kill(point.name, landed, f"hook, during {step} (exit {proc.returncode})", 0.0, leftovers(ws, remote))


def leftovers(ws: Path, remote: Path) -> list[str]:
    out = []
    for top in (ws, remote):
        for dirpath, dirnames, files in os.walk(top):
            in_git = "/.git" in dirpath
            for name in dirnames + files:
                path = Path(dirpath) / name
                if TEMP_NAME.search(name) or (in_git and LOCK_NAME.search(name)):
                    out.append(str(path.relative_to(ws.parent)))
                elif OBJECT_NAME.match(name) and "/files/md5/" in dirpath and path.stat().st_size == 0:
                    out.append(f"empty object {path.relative_to(ws.parent)}")  # DVC's reflink try
    return sorted(out)


# --- triggers ---------------------------------------------------------------------------------

def temp_of(name: str) -> Callable[[Path, Event], bool]:
    """The atomic writer's temp file or folder for output `name` (e.g. samples.parquet, 0001) appeared."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-\d+$")
    return lambda ws, ev: ev.created and bool(pattern.match(ev.path.name))


def inside_temp_of(name: str) -> Callable[[Path, Event], bool]:
    """A file appeared inside the temp folder of output `name`: a checkpoint is being saved (config,
    then the weights through their own temp file, then the tokenizer). Pick the moment with `nth`."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-\d+$")
    return lambda ws, ev: ev.created and bool(pattern.match(ev.path.parent.name))


def lock_written(ws: Path, ev: Event) -> bool:
    """dvc.lock is being (re)written by `dvc commit`; DVC truncates it first, then dumps the YAML."""
    return ev.path == ws / "dvc.lock" and ev.modified


def dvc_cache_write(ws: Path, ev: Event) -> bool:
    """`dvc commit` is copying an output into the cache (an object, not a run-cache entry)."""
    return ev.created and (ws / ".dvc" / "cache" / "files") in ev.path.parents


def dvc_rwlock(ws: Path, ev: Event) -> bool:
    return ev.path == ws / ".dvc" / "tmp" / "rwlock" and ev.modified


def remote_write(ws: Path, ev: Event) -> bool:
    """`dvc push` is writing an object (a temp file, then a rename) into the remote."""
    return ev.created and ws.parent / f"{ws.name}-remote" in ev.path.parents and not ev.mask & IN_ISDIR


def git_file(name: str) -> Callable[[Path, Event], bool]:
    """A git lock or ref file under .git (index.lock, refs/heads/main.lock, refs/tags/iter-0001.lock)."""
    return lambda ws, ev: ev.created and ev.path == ws / ".git" / name


# --- invariants -------------------------------------------------------------------------------

def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remote_objects(remote: Path) -> tuple[dict[str, Path], list[str]]:
    """Objects by hash, and the names of anything else (temp files) under the remote's md5 tree."""
    objects, other = {}, []
    root = remote / "files" / "md5"
    if not root.is_dir():
        return objects, other
    for sub in sorted(root.iterdir()):
        for f in sorted(sub.iterdir()):
            if len(sub.name) == 2 and OBJECT_NAME.match(f.name):
                objects[sub.name + f.name] = f
            else:
                other.append(f"{sub.name}/{f.name}")
    return objects, other


def bad_remote_objects(remote: Path, unfinished_too: bool = False) -> list[str]:
    """Objects whose bytes do not hash to their name: a half-written push. (A `.dir` object's name
    is the md5 of its JSON listing, so it is checked the same way.) DVC makes an object read-only
    once it is complete and re-hashes a writable one before trusting it, so a writable object is
    an upload still in progress; it counts only with `unfinished_too` (after a run has ended)."""
    objects, _ = remote_objects(remote)
    return sorted(h for h, path in objects.items() if (unfinished_too or not path.stat().st_mode & 0o222)
                  and md5_of(path) != h.removesuffix(".dir"))


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout


def tagged_problems(ws: Path, remote: Path) -> list[str]:
    """What is wrong at any iter-* tag: temp files in its tree, unparsable records, or outputs its
    dvc.lock names that the remote lacks."""
    problems = []
    objects, _ = remote_objects(remote)
    for path in git(ws, "ls-tree", "-r", "--name-only", "HEAD").splitlines():
        if TEMP_NAME.search(Path(path).name):
            problems.append(f"HEAD: temp file {path} is committed")
    for tag in git(ws, "tag", "--list", "iter-*").split():
        for path in git(ws, "ls-tree", "-r", "--name-only", tag).splitlines():
            if TEMP_NAME.search(Path(path).name):
                problems.append(f"{tag}: temp file {path} is committed")
            if path.startswith("records/") or path in ("dvc.lock", "iterations.yaml"):
                text = git(ws, "show", f"{tag}:{path}")
                try:
                    data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
                    assert isinstance(data, dict) and data
                except (ValueError, AssertionError, yaml.YAMLError):
                    problems.append(f"{tag}: {path} does not parse")
        lock = yaml.safe_load(git(ws, "show", f"{tag}:dvc.lock") or "{}") or {}
        for name, st in (lock.get("stages") or {}).items():
            for out in st.get("outs", []):
                md5 = out.get("md5")
                if md5 and md5 not in objects and not _git_tracked(ws, tag, out["path"]):
                    problems.append(f"{tag}: {name} output {out['path']} ({md5}) is not in the remote")
                elif md5 in objects and md5_of(objects[md5]) != md5.removesuffix(".dir"):
                    problems.append(f"{tag}: {name} output {out['path']} is corrupt in the remote")
                elif md5 and md5.endswith(".dir") and md5 in objects:
                    listing = json.loads(objects[md5].read_text())
                    problems += [f"{tag}: {out['path']}/{e['relpath']} is not in the remote (or corrupt)"
                                 for e in listing if e["md5"] not in objects or md5_of(objects[e["md5"]]) != e["md5"]]
    return problems


def _git_tracked(ws: Path, tag: str, path: str) -> bool:
    """Outputs with `cache: false` (choice.json, gate.json, ...) live in git, not in the remote."""
    return bool(git(ws, "ls-tree", tag, "--", path).strip())


def fsck_ok(ws: Path) -> tuple[bool, str]:
    proc = subprocess.run(["git", "fsck", "--no-dangling"], cwd=ws, capture_output=True, text=True)
    return proc.returncode == 0 and "error" not in proc.stderr.lower(), proc.stderr[-2000:]


def dvc_status(ws: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", *args], cwd=ws, capture_output=True, text=True)
    return (proc.stdout + proc.stderr).strip()


def lock_outs(ws: Path) -> dict[str, list]:
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return {name: sorted((o["path"], o.get("md5")) for o in st.get("outs", [])) for name, st in lock.items()}


# --- a campaign: several kills in one workspace, each followed by a resume ----------------------

def finished_iterations(ws: Path) -> int:
    return len([t for t in git(ws, "tag", "--list", "iter-*").split() if t != "iter-0000"]) if (ws / ".git").is_dir() else 0


def resume(ws: Path, recipe: Path, target: int, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run until `target` iterations are tagged (an interrupted one is resumed first). When the last
    kill came after the tag, a run of one iteration more still has to start cleanly."""
    left = max(target - finished_iterations(ws), 0) or 1
    cmd = [sys.executable, "-m", "flywheel", "run", "-w", str(ws), "-c", str(recipe), "-n", str(left)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    with (ws.parent / "runs.log").open("a") as log:
        log.write(f"\n=== {' '.join(cmd[2:])} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
    return proc


def problems_now(ws: Path, remote: Path, final: bool = False) -> list[str]:
    """Invariants that must hold after every kill: nothing half-written is tagged or pushed. Once a
    run has ended (`final`), not even an unfinished upload may be left in the remote."""
    out = tagged_problems(ws, remote) if (ws / ".git").is_dir() else []
    out += [f"remote object {h} does not hash to its name" for h in bad_remote_objects(remote, final)]
    if (ws / ".git").is_dir():
        ok, err = fsck_ok(ws)
        if not ok:
            out.append(f"git fsck: {err}")
    return out


# --- a workspace copied and rewound to a tag: later iterations must be computed and pushed again --

def referenced_objects(ws: Path, rev: str) -> set[str]:
    """Every object hash dvc.lock names at `rev`, with the files of its `.dir` listings."""
    lock = yaml.safe_load(git(ws, "show", f"{rev}:dvc.lock") or "{}") or {}
    cache = ws / ".dvc" / "cache" / "files" / "md5"
    out = set()
    for st in (lock.get("stages") or {}).values():
        for o in st.get("outs", []):
            md5 = o.get("md5")
            if not md5:
                continue
            out.add(md5)
            if md5.endswith(".dir"):
                out |= {e["md5"] for e in json.loads((cache / md5[:2] / md5[2:]).read_text())}
    return out


def prune_store(store: Path, keep: set[str]) -> None:
    objects, _ = remote_objects(store)
    for h, path in objects.items():
        if h not in keep:
            path.unlink()


def rewound_copy(src: Path, dest: Path, tag: str) -> tuple[Path, Path]:
    """Copy a finished workspace and its remote, then rewind both to `tag`: later tags, commits,
    outputs and cache/remote objects are gone, as if the run had stopped after `tag`."""
    import shutil

    ws, remote = dest / "ws", dest / "ws-remote"
    shutil.copytree(src, ws, symlinks=True)
    shutil.copytree(src.parent / f"{src.name}-remote", remote)
    subprocess.run([sys.executable, "-m", "dvc", "remote", "modify", "--local", "origin", "url", str(remote)],
                   cwd=ws, check=True, capture_output=True)
    later = [t for t in git(ws, "tag", "--list", "iter-*").split() if t > tag]
    for t in later:
        git(ws, "tag", "-d", t)
    git(ws, "reset", "-q", "--hard", tag)
    git(ws, "clean", "-fdq")  # later iterations' outputs (no longer git-ignored at `tag`)
    keep = referenced_objects(ws, tag)
    prune_store(ws / ".dvc" / "cache", keep)
    prune_store(remote, keep)
    (ws / ".flywheel" / "progress.json").unlink(missing_ok=True)
    return ws, remote


def unfinished_copy(src: Path, dest: Path, it: str, redo: list[str]) -> tuple[Path, Path]:
    """Copy a finished workspace as if the run had died inside iteration `it`, before the stages
    `redo` were recorded: untagged and uncommitted, those stages missing from dvc.lock, and the
    remote without the iteration's objects. Resuming it runs only `redo` and the finish."""
    tag = f"iter-{it}"
    ws, remote = rewound_copy(src, dest, tag)
    git(ws, "tag", "-d", tag)
    git(ws, "reset", "-q", "--soft", "HEAD~1")
    lock = yaml.safe_load((ws / "dvc.lock").read_text())
    for stage in redo:
        del lock["stages"][f"{stage}@{it}"]
    (ws / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    previous = f"iter-{int(it) - 1:04d}"
    prune_store(remote, referenced_objects(ws, previous))
    return ws, remote
