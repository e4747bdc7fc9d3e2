"""Reproduction cost: `flywheel reproduce N` against the wall time the original iteration took.

    python bench/reproduce_speed.py --workspace data/workspaces/default --iteration 2

The original time comes from the iteration's run record (started → finished, which includes
Prefect, DVC commits and the push). Reproduce runs in a fresh clone and pulls only the inputs.
Goal: ratio <= 1.1. Run it on an otherwise idle machine; both sides are single measurements.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import print_table
from tasks.workspace.atomic import read_json
from tasks.workspace.layout import Layout, iteration_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("data/workspaces/default"))
    ap.add_argument("--iteration", default="1")
    args = ap.parse_args()
    it = iteration_id(args.iteration)
    record = read_json(Layout(args.workspace.resolve()).record(it))
    original = (dt.datetime.fromisoformat(record["finished"]) - dt.datetime.fromisoformat(record["started"]))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flywheel", "reproduce", it, "-w", str(args.workspace), "--json"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {"ok": False, "checked": 0}
    if proc.returncode and not report.get("checked"):
        sys.exit(f"reproduce failed:\n{proc.stderr[-2000:]}")
    rows = [["original iteration (run record)", original.total_seconds(), ""],
            ["flywheel reproduce", seconds, f"{report['checked']} artifacts, all match: {report['ok']}"],
            ["ratio", seconds / original.total_seconds(), "goal <= 1.1"]]
    print_table(f"reproduce iteration {it}", ["run", "seconds", "note"], rows)


if __name__ == "__main__":
    main()
