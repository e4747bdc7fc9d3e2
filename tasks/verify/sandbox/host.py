"""What the sandbox needs from the host, and the bubblewrap command line that lays it out.

Each run is `bwrap` with new user, mount, PID, IPC, UTS, network (and, where offered, cgroup)
namespaces. Its root is one read-only tree holding only the Python interpreter, the shared
libraries it and its standard-library extensions link (as `ldd` lists them), and the standard
library without its site-packages and test suite; over it, a minimal /dev and a private tmpfs
/tmp. The venv, the workspace and this repository are not there. The tree is built once per
interpreter, as hard links where the file system allows, in a cache directory owned by this user
(RUNTIME_CACHE as root): one bind mount per run instead of one per file, which halves the cost of a
sandbox, and a path the sandbox's uid can read even when the interpreter lives under /root.
When the verifier runs as root, bwrap itself runs as `nobody` (65534), so the sample's process is
an unprivileged uid outside the namespaces too and its rlimits (RLIMIT_NPROC included) hold.
Memory outside the address space (tmpfs, shared memory, kernel objects) is bounded by the
sample's cgroup (tasks/verify/sandbox/cgroup.py), which run.py moves the sandbox into.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

from tasks.config.recipe import SandboxLimits
from tasks.errors import FlywheelError

NOBODY = 65534
RUNTIME_CACHE = Path("/var/cache/flywheel-sandbox")  # as root; others use ~/.cache/flywheel-sandbox
HIDDEN = ("site-packages", "dist-packages", "test")  # inside the standard library directory
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
       "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}  # a fixed hash seed keeps verdicts reproducible
_BUILD_LOCK = threading.Lock()


class SandboxUnavailable(FlywheelError):
    """The host cannot give untrusted code the isolation the unit_tests verifier requires."""

    def __init__(self, missing: str, fix: str) -> None:
        super().__init__(f"the unit_tests sandbox cannot run untrusted code here: {missing}.",
                         field="verifier.type", fix=fix)


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


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or protected_hardlinks for a file we do not own
        shutil.copy2(src, dst)


def _cache_dir() -> Path:
    if os.geteuid() == 0:
        return RUNTIME_CACHE
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flywheel-sandbox"


def _check_owned(path: Path) -> None:
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SandboxUnavailable(f"{path} is not owned by this user or is writable by others",
                                 f"remove {path}; it is rebuilt on the next run.")


def _layout() -> tuple[str, list[tuple[str, str]]]:
    """(interpreter, [(host source, path in the sandbox)]) for this interpreter."""
    interpreter = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    stdlib = os.path.realpath(sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix,
                                                                "base": sys.base_prefix}))
    dynload = os.path.realpath(sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload"))
    extensions = sorted(glob.glob(os.path.join(dynload, "*.so")))
    items = [(interpreter, interpreter), (stdlib, stdlib)]
    if not dynload.startswith(stdlib + os.sep) and os.path.isdir(dynload):
        items.append((dynload, dynload))
    for dest, src in sorted(_shared_libraries([interpreter, *extensions]).items()):
        if not src.startswith((stdlib + os.sep, dynload + os.sep)):
            items.append((src, dest))
    return interpreter, items


def _build(items: list[tuple[str, str]], target: Path) -> None:
    build = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build.chmod(0o755)
        for mount_point in ("dev", "tmp"):
            (build / mount_point).mkdir(mode=0o755)
        for src, dest in items:
            dst = build / dest.lstrip("/")
            dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if os.path.isdir(src):
                shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy,
                                ignore=lambda d, names: [n for n in names if n in HIDDEN and d == src])
            else:
                _link_or_copy(src, str(dst))
        for d, _, _ in os.walk(build):  # every directory readable by the sandbox's uid
            os.chmod(d, 0o755)
        os.rename(build, target)
    except OSError:
        shutil.rmtree(build, ignore_errors=True)
        if not target.is_dir():  # else another process finished first
            raise


@functools.cache
def runtime() -> tuple[str, Path]:
    """(interpreter path, root tree) that every sandbox gets; built once per interpreter and machine."""
    interpreter, items = _layout()
    stamp = "\n".join(f"{src} {dest} {os.stat(src).st_mtime_ns} {os.stat(src).st_ino}" for src, dest in items)
    key = hashlib.sha256(f"{sys.version}\n{sorted(HIDDEN)}\n{stamp}".encode()).hexdigest()[:16]
    cache = _cache_dir()
    target = cache / key
    with _BUILD_LOCK:
        try:
            cache.mkdir(mode=0o755, parents=True, exist_ok=True)
            _check_owned(cache)
            if not target.is_dir():
                _build(items, target)
        except OSError as exc:
            raise SandboxUnavailable(f"the sandbox's Python runtime cannot be laid out in {cache} ({exc})",
                                     f"make {cache} writable by this user.") from exc
        _check_owned(target)
    return interpreter, target


def tmp_bytes(limits: SandboxLimits) -> int:
    """Size of the sample's private /tmp, a tmpfs: its pages are host memory (charged to the sample's cgroup)."""
    return max(16, 4 * limits.file_size_mb) * 1024 * 1024


def bwrap_command(limits: SandboxLimits, seccomp_fd: int, runner: list[str]) -> list[str]:
    """The bwrap command line for one run; `runner` is the interpreter's arguments."""
    interpreter, root = runtime()
    ids = sandbox_ids() or (os.getuid(), os.getgid())
    argv = ["bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(ids[0]), "--gid", str(ids[1]), "--hostname", "sandbox", "--clearenv"]
    for name, value in ENV.items():
        argv += ["--setenv", name, value]
    argv += ["--ro-bind", str(root), "/", "--dev", "/dev", "--remount-ro", "/dev",
             "--size", str(tmp_bytes(limits)), "--tmpfs", "/tmp", "--chdir", "/tmp", "--seccomp", str(seccomp_fd),
             "--", interpreter, *runner]
    return argv


def check_host() -> None:
    """The parts of the host the sandbox needs, before any run; raises SandboxUnavailable."""
    from tasks.verify.sandbox.seccomp import SeccompUnavailable, bpf_program

    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable("it needs Linux namespaces and seccomp", "run the verifier on Linux.")
    if not shutil.which("timeout"):
        raise SandboxUnavailable("`timeout` (GNU coreutils) is not installed; it kills each sandbox at its wall "
                                 "limit", "install coreutils.")
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
