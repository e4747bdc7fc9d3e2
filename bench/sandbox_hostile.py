"""How much host memory and disk hostile samples can still take from the unit_tests sandbox.

Each attack runs through `make_verifier("unit_tests")` with the default limits (`verifier.sandbox`),
one sample alone and then `--copies` at once (as many workers). While it runs, a thread samples the
host's MemAvailable (/proc/meminfo) every 10 ms and the free space of the file systems of / and of
the temporary directory; the table shows the largest drop from the figure just before, and, where
the sandbox has cgroups, the peak of all samples' cgroup together. Other work on the host moves
MemAvailable too: the cgroup peak is the exact figure, the MemAvailable drop an upper bound.

    .venv/bin/python bench/sandbox_hostile.py [--copies 8] [--only memfd,shm] [--wall 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import print_table  # noqa: E402
from tasks.config.recipe import SandboxLimits, VerifierConfig  # noqa: E402
try:
    from tasks.verify.sandbox import cgroup  # noqa: E402
except ImportError:  # a sandbox from before cgroups (to measure what it let through)
    cgroup = None  # type: ignore[assignment]
from tasks.verify.verifiers import make_verifier  # noqa: E402

LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
ATTACKS = {
    "memfd": "import os\nkeep = []\nwhile True:\n    fd = os.memfd_create('x')\n    keep.append(fd)\n"
             "    for _ in range(16):\n        os.write(fd, b'x' * (1 << 20))\n",
    "sysv-shm": LIBC + "libc.shmat.restype = ctypes.c_void_p\nlibc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, "
                "ctypes.c_int]\nlibc.shmdt.argtypes = [ctypes.c_void_p]\nwhile True:\n    sid = libc.shmget(0, 64 << 20, 0o1600)\n    if sid < 0:\n        break\n"
                "    addr = libc.shmat(sid, None, 0)\n    ctypes.memset(ctypes.c_void_p(addr), 1, 64 << 20)\n"
                "    libc.shmdt(ctypes.c_void_p(addr))\n",
    "posix-shm": "i = 0\nwhile True:\n    with open(f'/dev/shm/x{i}', 'wb') as f:\n        f.write(b'x' * (16 << 20))\n"
                 "    i += 1\n",
    "tmpfs-inodes": "import os\ni = 0\nwhile True:\n    os.close(os.open(f'/tmp/{i}', os.O_CREAT | os.O_WRONLY))\n"
                    "    i += 1\n",
    "tmpfs-pages": "i = 0\nwhile True:\n    with open(f'/tmp/f{i}', 'wb') as f:\n        f.write(b'x' * (1 << 20))\n"
                   "    i += 1\n",
    "stderr-fallocate": LIBC + "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
                        "print(libc.fallocate(2, 1, 0, 2 << 30), ctypes.get_errno())\n",
    "stderr-flood": "import os\nwhile True:\n    os.write(2, b'x' * (1 << 16))\n",
    "pipes": "import fcntl, os\nkeep = []\nwhile True:\n    r, w = os.pipe()\n    keep += [r, w]\n"
             "    fcntl.fcntl(w, 1031, 1 << 20)\n    os.set_blocking(w, False)\n"
             "    try:\n        while True:\n            os.write(w, b'x' * 65536)\n    except BlockingIOError:\n"
             "        pass\n",
    "anonymous": "keep = []\nwhile True:\n    keep.append(bytearray(10 << 20))\n",
    "fork-bomb": "import os\nwhile True:\n    os.fork()\n",
}
WRONG = "\ndef add(a, b):\n    return a - b\n"
TESTS = '["assert add(2, 3) == 5"]'


class Watch:
    """Largest drop of MemAvailable and of free disk space while it runs."""

    def __init__(self) -> None:
        self.disks = sorted({"/", tempfile.gettempdir()})
        self.mem0, self.disk0 = _available(), [_free(d) for d in self.disks]
        self.mem_drop, self.disk_drop = 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(0.01):
            self.mem_drop = max(self.mem_drop, self.mem0 - _available())
            self.disk_drop = max(self.disk_drop, *(b - _free(d) for b, d in zip(self.disk0, self.disks)))

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def run(attack: str, copies: int, limits: SandboxLimits) -> tuple[list[str], float, Watch, int]:
    prompts = pl.DataFrame({"prompt_id": ["p"], "answer": [TESTS]})
    samples = pl.DataFrame({"prompt_id": ["p"] * copies, "sample_idx": list(range(copies)),
                            "text": [f"```python\n{ATTACKS[attack]}{WRONG}# copy {i}\n```" for i in range(copies)]},
                           schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String})
    verifier = make_verifier("unit_tests", VerifierConfig(type="unit_tests",
                                                          sandbox=limits.model_copy(update={"workers": copies})))
    peak_before = cgroup.parent_peak_bytes() if cgroup else 0
    start = time.monotonic()
    with Watch() as watch:
        out = verifier.verify(samples, prompts)
    seconds = time.monotonic() - start
    peak = cgroup.parent_peak_bytes() if cgroup else 0
    return out["extracted_answer"].to_list(), seconds, watch, peak if peak != peak_before or peak else 0


def _reset_peak() -> None:
    """Start the cgroup's peak afresh (v1 takes a write to max_usage_in_bytes; v2's memory.peak a reset)."""
    parent = cgroup._parent if cgroup else None
    if parent is None:
        return
    name = "memory.peak" if parent.layout.v2 else "memory.max_usage_in_bytes"
    try:
        (parent.memory_dir / name).write_text("0" if not parent.layout.v2 else "reset")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated attack names")
    parser.add_argument("--wall", type=float, default=10.0)
    args = parser.parse_args()
    names = [n for n in (args.only.split(",") if args.only else ATTACKS) if n]
    limits = SandboxLimits(wall_seconds=args.wall)
    mb = 1 / (1 << 20)
    rows = []
    for name in names:
        for copies in (1, args.copies):
            _reset_peak()
            statuses, seconds, watch, peak = run(name, copies, limits)
            rows.append([name, copies, ",".join(sorted(set(statuses))), seconds, watch.mem_drop * mb,
                         peak * mb if peak else "-", watch.disk_drop * mb])
            print(f"{name} x{copies}: {rows[-1][2:]}", flush=True)
    layout = cgroup.layout() if cgroup else None
    print_table(f"Hostile samples, default limits ({limits.memory_mb} MB address space, {limits.file_size_mb} MB files, "
                f"{limits.cpu_seconds} s CPU, {limits.wall_seconds} s wall); cgroups: "
                f"{layout.describe() if layout else 'none'}",
                ["attack", "at once", "statuses", "seconds", "MemAvailable drop MB", "cgroup peak MB",
                 "disk drop MB"], rows)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
