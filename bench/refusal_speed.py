"""How fast `flywheel run` refuses what it must refuse: a busy workspace and a bad recipe.

Both are refused before Prefect (or any engine) starts, so each should take about as long as
`flywheel --help`, the interpreter and CLI start-up, and well under the 2 s goal. The script
creates a workspace from the default recipe, holds its run lock from a second process, and times
the CLI as a user runs it (a subprocess), side by side with `flywheel --help`. It also checks
that each refusal is one `error:` line with the expected exit code.

    .venv/bin/python bench/refusal_speed.py [--config configs/tiny-arith.yaml] [--repeats 5]

Run it on an otherwise idle machine; the table gives the median and the best of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import print_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 2.0
HOLDER = ("import sys; from pathlib import Path; from tasks.workspace.layout import Layout; "
          "from tasks.workspace.repo import workspace_lock\n"
          "with workspace_lock(Layout(Path(sys.argv[1]))):\n"
          "    print('ready', flush=True); sys.stdin.read()")


def cli(*args: str, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flywheel", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    return time.perf_counter() - start, proc


def one_error_line(proc: subprocess.CompletedProcess) -> bool:
    """One `error:` line, no traceback; a `workspace: ...` line may precede it when -w was not given."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("workspace: "):
        lines = lines[1:]
    return len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr


def measure(label: str, args: list[str], cwd: Path, expect: int | None, repeats: int, baseline: float | None):
    times, last = [], None
    for _ in range(repeats):
        took, last = cli(*args, cwd=cwd)
        times.append(took)
    ok = expect is None or (last.returncode == expect and one_error_line(last))
    median = statistics.median(times)
    lines = len(last.stderr.strip().splitlines())
    row = [label, median, min(times), last.returncode,
           "yes" if ok else f"no: {lines} lines{', a traceback' if 'Traceback' in last.stderr else ''}",
           f"{median / baseline:.2f}×" if baseline else "1.00×", "yes" if median < GOAL_S else "no"]
    return median, row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny-arith.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="flywheel-refusal-") as tmp:
        tmp = Path(tmp)
        ws = tmp / "ws"
        subprocess.run([sys.executable, "-m", "flywheel", "init", str(ws), "--config", str(args.config)],
                       cwd=ROOT, check=True, capture_output=True)
        bad = yaml.safe_load(args.config.read_text())
        bad.setdefault("generate", {})["kk"] = 3  # an unknown key
        (tmp / "bad.yaml").write_text(yaml.safe_dump(bad))

        help_s, help_row = measure("flywheel --help (start-up)", ["--help"], ROOT, None, args.repeats, None)
        rows = [help_row]
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ws)], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "ready"
            rows.append(measure("run -w WS, workspace busy (exit 3)", ["run", "-w", str(ws)], ROOT, 3,
                                args.repeats, help_s)[1])
            rows.append(measure("run -w WS, busy, found from cwd (exit 3)", ["run"], ws / "records", 3,
                                args.repeats, help_s)[1])
        finally:
            holder.stdin.close()
            holder.wait(timeout=60)
        rows.append(measure("run -w NEW -c BAD, bad recipe (exit 2)",
                            ["run", "-w", str(tmp / "new"), "-c", str(tmp / "bad.yaml")], ROOT, 2, args.repeats,
                            help_s)[1])
    print_table(f"time to refuse ({args.repeats} repeats each; goal < {GOAL_S:g} s)",
                ["case", "median s", "best s", "exit", "one error line", "vs --help", "< goal"], rows)


if __name__ == "__main__":
    main()
