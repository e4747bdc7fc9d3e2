"""The sandbox's seccomp filter: a deny list compiled to a BPF program by libseccomp.

bwrap loads the program (`--seccomp FD`) as the last step before it starts the sandboxed
interpreter, under no_new_privs, so everything the sample runs is filtered and the filter cannot
be removed. A denied call ends the whole process with SIGSYS (status `blocked`): a sample cannot
catch it and carry on. The runner itself needs none of these calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile

# Killed on sight. Grouped by what they would give the sample.
DENIED: dict[str, tuple[str, ...]] = {
    "new processes and threads": ("fork", "vfork", "clone"),
    "other processes": ("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
                        "pidfd_open", "pidfd_send_signal", "pidfd_getfd"),
    "signals": ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"),
    "leaving the process group or session": ("setpgid", "setsid"),
    "sockets": ("socket", "socketpair"),
    "mounts": ("mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
               "fsmount", "fspick", "mount_setattr"),
    "namespaces": ("unshare", "setns"),
    "keyrings": ("add_key", "request_key", "keyctl"),
    "kernel interfaces": ("bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
                          "io_uring_register", "open_by_handle_at", "name_to_handle_at", "fanotify_init",
                          "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                          "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "ioperm", "iopl",
                          "modify_ldt", "uselib", "lookup_dcookie", "vhangup", "nfsservctl"),
    # their memory is the kernel's, outside the sample's address space (the cgroup charges it where there is one)
    "System V IPC and POSIX message queues": ("shmget", "shmat", "msgget", "msgsnd", "semget", "mq_open",
                                              "mq_timedsend"),
    "host settings": ("sethostname", "setdomainname", "settimeofday", "clock_settime", "adjtimex",
                      "clock_adjtime"),
}
# clone3 answers ENOSYS, so the C library falls back to clone, which is killed: one clear outcome.
# memfd_create and memfd_secret answer ENOSYS: anonymous files that RLIMIT_FSIZE caps each but nothing
# caps in number (without a cgroup), and that the C library and libffi only use when offered.
ENOSYS_CALLS = ("clone3", "memfd_create", "memfd_secret")

_ACT_KILL_PROCESS = 0x80000000
_ACT_ALLOW = 0x7FFF0000
_ATTR_ACT_BADARCH = 2  # another ABI (i386 via int 0x80, x32) is killed too
_CMP_NE = 1


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or refused to build the filter."""


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp cannot be loaded ({exc})") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def denied_syscalls() -> list[str]:
    return [name for group in DENIED.values() for name in group]


@functools.cache
def bpf_program() -> bytes:
    """The compiled filter for this machine's architecture (built once per process)."""
    lib = _libseccomp()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        def add(action: int, name: str, *cmps: _ArgCmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a system call on this architecture
                return
            array = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            if lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array) != 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}")

        if lib.seccomp_attr_set(ctx, _ATTR_ACT_BADARCH, _ACT_KILL_PROCESS) != 0:
            raise SeccompUnavailable("libseccomp refused the bad-architecture action")
        for name in denied_syscalls():
            add(_ACT_KILL_PROCESS, name)
        for name in ENOSYS_CALLS:
            add(_act_errno(errno.ENOSYS), name)
        # limits of other processes: only pid 0 (this process) may be named; raising is the kernel's to refuse
        add(_ACT_KILL_PROCESS, "prlimit64", _ArgCmp(0, _CMP_NE, 0, 0))
        with tempfile.TemporaryFile() as out:
            if lib.seccomp_export_bpf(ctx, out.fileno()) != 0:
                raise SeccompUnavailable("seccomp_export_bpf failed")
            out.seek(0)
            program = out.read()
    finally:
        lib.seccomp_release(ctx)
    if not program or len(program) % 8:
        raise SeccompUnavailable("libseccomp wrote no BPF program")
    return program


def program_fd() -> int:
    """A pipe's read end holding the program, for `bwrap --seccomp FD` (the caller closes it)."""
    program = bpf_program()
    read, write = os.pipe()
    try:
        os.write(write, program)  # a few hundred bytes: well under the pipe's buffer
    finally:
        os.close(write)
    return read
