"""Orchestration overhead: the whole `flywheel run` (Prefect + DVC + git) against the same stage
functions called bare in one process, on the same recipe, side by side.

    python bench/orchestration_overhead.py --config configs/tiny-arith.yaml --iterations 1

Goal: ratio <= 1.15. The bare run writes the same files but records nothing (no lock, no DVC
hashes, no commits, no Prefect states), so the difference is what orchestration costs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import print_table
from tasks.config.loading import load_recipe, recipe_to_yaml, write_recipe
from tasks.pipeline import BOOTSTRAP_STAGES, ITERATION_STAGES, IterationVars, run_stage, write_iteration_vars
from tasks.workspace.atomic import read_json
from tasks.workspace.layout import Layout


def bare_run(config: Path, root: Path, iterations: int) -> None:
    """The stages in order, in this process, with no orchestration at all."""
    recipe = load_recipe(config)
    layout = Layout(root)
    write_recipe(recipe, layout.recipe)
    for name in BOOTSTRAP_STAGES:
        run_stage(layout, name)
    parent, table = "0000", {}
    for i in range(1, iterations + 1):
        it = f"{i:04d}"
        layout.params(it).parent.mkdir(parents=True, exist_ok=True)
        layout.params(it).write_text(recipe_to_yaml(recipe))
        table[it] = IterationVars(parent=parent, init=parent if recipe.train.mode == "continue" else "0000", round=i)
        write_iteration_vars(layout, table)
        for name in ITERATION_STAGES:
            run_stage(layout, name, it)
        parent = read_json(layout.promotion(it))["next_parent"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/tiny-arith.yaml"))
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--mode", choices=["both", "bare", "flywheel"], default="both")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        tmp = Path(tmp)
        times = {}
        if args.mode in ("both", "bare"):
            # a fresh interpreter, so import costs count on both sides
            start = time.perf_counter()
            _bare_subprocess(args, tmp / "bare")
            times["bare stage functions"] = time.perf_counter() - start
        if args.mode in ("both", "flywheel"):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "flywheel", "run", "-w", str(tmp / "ws"), "-c", str(args.config),
                            "-n", str(args.iterations)], check=True, capture_output=True)
            times["flywheel run"] = time.perf_counter() - start
    rows = [[k, v] for k, v in times.items()]
    if len(times) == 2:
        rows.append(["ratio (flywheel / bare)", times["flywheel run"] / times["bare stage functions"]])
    print_table(f"orchestration overhead, {args.iterations} iteration(s)", ["run", "seconds"], rows)


def _bare_subprocess(args, root: Path) -> None:
    code = ("import sys; from pathlib import Path; from bench.orchestration_overhead import bare_run; "
            f"bare_run(Path({str(args.config)!r}), Path({str(root)!r}), {args.iterations})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


if __name__ == "__main__":
    main()
