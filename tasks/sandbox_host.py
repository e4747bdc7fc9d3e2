"""What the sandbox needs from the host, and the bubblewrap command line that lays it out.

Each run is `bwrap` with new user, mount, PID, IPC, UTS, network (and, where offered, cgroup)
namespaces. Its root is an empty tmpfs holding only, read-only: the Python interpreter, its
shared libraries (as `ldd` lists them), the standard library (its site-packages and test suite
hidden), a minimal /dev, and a private writable /tmp. The venv, the workspace and this
repository are not there. When the verifier runs as root, bwrap itself runs as `nobody`
(65534), so the sample's process is an unprivileged uid outside the namespaces too and its
rlimits (RLIMIT_NPROC included) hold. An interpreter that `nobody` cannot read (pyenv under
/root, say) is mirrored once, with hard links where the file system allows, into a root-owned
cache (RUNTIME_CACHE).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tasks.config import SandboxLimits
from tasks.errors import FlywheelError

NOBODY = 65534
RUNTIME_CACHE = Path("/var/cache/flywheel-sandbox")
HIDDEN = ("site-packages", "dist-packages", "test")  # inside the standard library directory
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
       "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}  # a fixed hash seed keeps verdicts reproducible
_MIRROR_LOCK = threading.Lock()


class SandboxUnavailable(FlywheelError):
    """The host cannot give untrusted code the isolation the unit_tests verifier requires."""

    def __init__(self, missing: str, fix: str) -> None:
        super().__init__(f"the unit_tests sandbox cannot run untrusted code here: {missing}.",
                         field="verifier.type", fix=fix)


@dataclass(frozen=True)
class Runtime:
    interpreter: str  # the same path inside the sandbox as on the host
    binds: tuple[tuple[str, str], ...]  # (host source, sandbox destination), read-only
    hidden: tuple[str, ...]  # directories covered by an empty read-only tmpfs


def sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) that bwrap is started as: nobody when we are root; else None (our own, unprivileged)."""
    return (NOBODY, NOBODY) if os.geteuid() == 0 else None


def _shared_libraries(files: list[str]) -> dict[str, str]:
    """{path the loader asks for: real file} for the libraries `files` link against."""
    if not shutil.which("ldd"):
        raise SandboxUnavailable("`ldd` is not installed", "install the C library tools (Debian: libc-bin).")
    out = subprocess.run(["ldd", *files], capture_output=True, text=True, timeout=60).stdout
    libs: dict[str, str] = {}
    for line in out.splitlines():
        target = line.split("=>", 1)[1] if "=>" in line else line
        path = target.strip().split(" (", 1)[0].strip()
        if path.startswith("/") and os.path.exists(path):
            libs[path] = os.path.realpath(path)
    return libs


def _reachable(path: str, ids: tuple[int, int] | None) -> bool:
    """Whether uid/gid `ids` can read `path` (and traverse every directory above it)."""
    if ids is None:
        return True
    uid, gid = ids

    def allowed(st: os.stat_result, bits: tuple[int, int, int]) -> bool:
        own, grp, oth = bits
        return bool(st.st_mode & (own if st.st_uid == uid else grp if st.st_gid == gid else oth))

    real = Path(os.path.realpath(path))
    for parent in reversed(real.parents):
        if not allowed(parent.stat(), (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
            return False
    st = real.stat()
    return allowed(st, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)) and (
        not real.is_dir() or allowed(st, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _mirror(sources: list[str], key: str) -> Path:
    """A root-owned, world-readable copy of `sources` (host paths kept below it), built once."""
    with _MIRROR_LOCK:
        target = RUNTIME_CACHE / key
        if target.is_dir():
            _check_owned(target)
            return target
        try:
            RUNTIME_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
            _check_owned(RUNTIME_CACHE)
            build = Path(tempfile.mkdtemp(prefix=".build-", dir=RUNTIME_CACHE))
            build.chmod(0o755)
            for src in sources:
                dst = build / src.lstrip("/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                for d in [dst.parent, *dst.parent.parents]:
                    if d == build:
                        break
                    d.chmod(0o755)
                if os.path.isdir(src):
                    shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy,
                                    ignore=lambda d, names: [n for n in names if n in HIDDEN and d == src])
                    for name in HIDDEN:  # empty, so the mount points exist
                        if os.path.isdir(os.path.join(src, name)):
                            (dst / name).mkdir(mode=0o755)
                else:
                    _link_or_copy(src, str(dst))
            try:
                os.rename(build, target)
            except OSError:
                shutil.rmtree(build, ignore_errors=True)
                if not target.is_dir():
                    raise
                # another process finished first
        except OSError as exc:
            raise SandboxUnavailable(f"the Python runtime cannot be mirrored into {RUNTIME_CACHE} ({exc})",
                                     f"make {RUNTIME_CACHE} writable by root, or install Python where "
                                     "every user can read it.") from exc
        _check_owned(target)
        return target


def _check_owned(path: Path) -> None:
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SandboxUnavailable(f"{path} is not owned by this user or is writable by others",
                                 f"remove {path}; it is rebuilt on the next run.")


@functools.cache
def runtime() -> Runtime:
    """The read-only view of this interpreter that each sandbox gets (computed once per process)."""
    interpreter = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    stdlib = os.path.realpath(sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix,
                                                                "base": sys.base_prefix}))
    dynload = os.path.realpath(sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload"))
    extensions = sorted(glob.glob(os.path.join(dynload, "*.so")))
    libs = {dest: src for dest, src in _shared_libraries([interpreter, *extensions]).items()
            if not src.startswith(stdlib + os.sep) and not src.startswith(dynload + os.sep)}
    binds = [(interpreter, interpreter), (stdlib, stdlib), *sorted((src, dest) for dest, src in libs.items())]
    if not dynload.startswith(stdlib + os.sep) and os.path.isdir(dynload):
        binds.append((dynload, dynload))
    hidden = tuple(os.path.join(stdlib, h) for h in HIDDEN if os.path.isdir(os.path.join(stdlib, h)))
    ids = sandbox_ids()
    unreachable = [src for src, _ in binds if not _reachable(src, ids)]
    if unreachable:
        stamp = "\n".join(f"{p} {os.stat(p).st_mtime_ns}" for p in sorted(unreachable))
        root = _mirror(unreachable, hashlib.sha256(f"{sys.version}\n{stamp}".encode()).hexdigest()[:16])
        binds = [(str(root / src.lstrip("/")) if src in unreachable else src, dest) for src, dest in binds]
    return Runtime(interpreter, tuple(binds), hidden)


def bwrap_command(limits: SandboxLimits, seccomp_fd: int, runner: list[str]) -> list[str]:
    """The bwrap command line for one run; `runner` is the interpreter's arguments."""
    rt = runtime()
    ids = sandbox_ids() or (os.getuid(), os.getgid())
    argv = ["bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(ids[0]), "--gid", str(ids[1]), "--hostname", "sandbox", "--clearenv"]
    for name, value in ENV.items():
        argv += ["--setenv", name, value]
    for src, dest in rt.binds:
        argv += ["--ro-bind", src, dest]
    for path in rt.hidden:
        argv += ["--tmpfs", path, "--remount-ro", path]
    tmp_bytes = max(16, 4 * limits.file_size_mb) * 1024 * 1024  # a tmpfs: its pages are host memory
    argv += ["--dev", "/dev", "--remount-ro", "/dev", "--size", str(tmp_bytes), "--tmpfs", "/tmp",
             "--chdir", "/tmp", "--remount-ro", "/", "--seccomp", str(seccomp_fd),
             "--", rt.interpreter, *runner]
    return argv


def check_host() -> None:
    """The parts of the host the sandbox needs, before any run; raises SandboxUnavailable."""
    from tasks.sandbox_seccomp import SeccompUnavailable, bpf_program

    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable("it needs Linux namespaces and seccomp", "run the verifier on Linux.")
    if not shutil.which("bwrap"):
        raise SandboxUnavailable("bubblewrap (`bwrap`) is not installed",
                                 "install it (Debian/Ubuntu: apt-get install bubblewrap; `make install` does "
                                 "this when run as root).")
    try:
        bpf_program()
    except SeccompUnavailable as exc:
        raise SandboxUnavailable(f"seccomp filters cannot be built ({exc})",
                                 "install libseccomp (Debian/Ubuntu: apt-get install libseccomp2).") from exc
    runtime()
