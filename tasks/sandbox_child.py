"""The program a sandboxed child runs first (stdlib only; see tasks/sandbox.py for the threat model).

It reads one JSON request from stdin ({"code", "nonce", "limits"}), lowers its own resource limits
(soft = hard, so they cannot be raised again), installs an audit hook that ends the process on any
forbidden operation, then runs the code. The exit status tells the parent what happened.
"""

import json
import linecache
import os
import resource
import sys
import traceback

PASSED, FAILED, ERROR, MEMORY, BLOCKED = 0, 1, 2, 3, 4

# Always forbidden: processes, signals to others, native code, raising limits, more hooks.
FORBIDDEN = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "os.kill", "os.killpg", "os.startfile", "pty.spawn", "resource.setrlimit", "resource.prlimit",
    "sys.addaudithook", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "os.chroot", "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags", "webbrowser.open",
})
# Imports that would reach around the hook: fork_exec has no audit event of its own; ctypes calls C.
FORBIDDEN_IMPORTS = frozenset({"_posixsubprocess", "ctypes", "_ctypes", "_xxsubinterpreters"})
# Events that change the file system: (number of leading path arguments, positions of dir_fd arguments).
# Every path must lie inside the sandbox directory; a path relative to a descriptor cannot be checked.
WRITE_EVENTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "os.remove": (1, (1,)), "os.rmdir": (1, (1,)), "os.mkdir": (1, (2,)), "os.rename": (2, (2, 3)),
    "os.link": (2, (2, 3)), "os.symlink": (2, (2,)), "os.truncate": (1, ()), "os.chmod": (1, (2,)),
    "os.chown": (1, (3,)), "os.utime": (1, (3,)), "os.chdir": (1, ()), "os.mkfifo": (1, (2,)),
    "os.mknod": (1, (3,)), "shutil.rmtree": (1, (1,)), "shutil.copyfile": (2, ()), "shutil.copymode": (2, ()),
    "shutil.copystat": (2, ()), "shutil.move": (2, ()), "shutil.chown": (1, ()),
}
READ_DIR_EVENTS = frozenset({"os.listdir", "os.scandir"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def set_limits(limits: dict[str, int]) -> None:
    mb = 1024 * 1024
    for rlimit, value in ((resource.RLIMIT_CPU, limits["cpu_seconds"]),
                          (resource.RLIMIT_AS, limits["memory_mb"] * mb),
                          (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb),
                          (resource.RLIMIT_NOFILE, 64),
                          (resource.RLIMIT_CORE, 0),
                          # no new processes or threads (not enforced for root; the hook covers forks)
                          (resource.RLIMIT_NPROC, 0)):
        # CPU: SIGXCPU at the soft limit, SIGKILL a second later if it is ignored
        resource.setrlimit(rlimit, (value, value + 1 if rlimit == resource.RLIMIT_CPU else value))


def make_hook(root: str, read_roots: tuple[str, ...]):
    realpath, fsdecode, readlink, write = os.path.realpath, os.fsdecode, os.readlink, os.write

    def inside(path, roots: tuple[str, ...]) -> bool:
        if isinstance(path, int):  # an already open descriptor
            return True
        if path is None:
            return False
        try:
            full = realpath(fsdecode(path))
        except (TypeError, ValueError):
            return False
        return any(full == r or full.startswith(r + os.sep) for r in roots)

    def at(dir_fd, path):
        """`path` as the kernel will resolve it: relative to `dir_fd` when one is given (Linux /proc)."""
        if dir_fd is None or isinstance(path, int):
            return path
        try:
            return os.path.join(readlink(f"/proc/self/fd/{dir_fd}"), fsdecode(path))
        except OSError:
            return None  # unknown: treated as outside

    def block(event: str, detail: object) -> None:
        write(2, f"\nsandbox: blocked {event} {detail!r}\n".encode(errors="replace")[:2000])
        os._exit(BLOCKED)  # not an exception: the code under test cannot catch it

    def hook(event: str, args: tuple) -> None:
        if event in FORBIDDEN or event.startswith("socket."):
            block(event, args[:2])
        elif event == "import":
            if args[0].partition(".")[0] in FORBIDDEN_IMPORTS:
                block(event, args[0])
        elif event == "open":
            path, mode, flags = args
            writing = bool(flags & WRITE_FLAGS) or (mode is not None and any(c in mode for c in "wax+"))
            # os.open (mode None) may be relative to a dir_fd the event does not show: only inside.
            if not inside(path, (root,)) and (writing or mode is None or not inside(path, read_roots)):
                block(event, (path, mode))
        elif event in READ_DIR_EVENTS:
            if args and args[0] is not None and not inside(args[0], (root, *read_roots)):
                block(event, args[0])
        elif event in WRITE_EVENTS:
            n_paths, dir_fd_at = WRITE_EVENTS[event]
            dir_fds = [args[i] if i < len(args) and isinstance(args[i], int) and args[i] >= 0 else None
                       for i in dir_fd_at] + [None]
            # rename/link have one dir_fd per path; symlink's and the others' dir_fd applies to the last path
            fds = dir_fds[:n_paths] if len(dir_fd_at) == n_paths else [None] * (n_paths - 1) + dir_fds[:1]
            if not all(inside(at(fd, a), (root,)) for a, fd in zip(args[:n_paths], fds)):
                block(event, args[:n_paths])
    return hook


def main() -> None:
    request = json.loads(sys.stdin.read())
    nonce, code = request["nonce"], request["code"]
    root = os.path.realpath(os.getcwd())
    read_roots = tuple(sorted({os.path.realpath(p) for p in (
        sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.__file__),
        __file__)}
        | {"/dev/null", "/dev/urandom"}))
    set_limits(request["limits"])
    sys.addaudithook(make_hook(root, read_roots))
    del request
    linecache.cache["<sample>"] = (len(code), None, code.splitlines(True), "<sample>")  # lines in tracebacks
    namespace = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    try:
        exec(compile(code, "<sample>", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: a sample must not end the run early
        status = FAILED if isinstance(exc, AssertionError) else MEMORY if isinstance(exc, MemoryError) else ERROR
        del namespace  # free the sample's memory before formatting the error
        try:
            text = "".join(traceback.format_exception(exc, limit=-3))
        except BaseException:  # noqa: BLE001 - still out of memory
            text = type(exc).__name__
        os.write(2, text.encode(errors="replace")[-4000:])
        os._exit(status)  # skip atexit handlers the sample may have registered
    os.write(2, f"\n{nonce}\n".encode())
    os._exit(PASSED)


if __name__ == "__main__":
    main()
