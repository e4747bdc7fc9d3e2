"""What a process per stage costs: one `flywheel run` of a recipe with `numerics.isolate_stages` on and
one with it off, side by side, and whether both wrote the same bytes.

    python bench/stage_isolation.py                      # the default recipe, 1 iteration each
    python bench/stage_isolation.py --config configs/tiny-arith.yaml --iterations 2

Both runs use fresh workspaces under bench/results/. Run it on an otherwise idle machine; each
side is a single measurement (run it twice to see the noise).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import print_table

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path, isolate: bool, iterations: int, out: Path) -> tuple[float, dict]:
    recipe = yaml.safe_load(config.read_text())
    recipe["numerics"] = {**(recipe.get("numerics") or {}), "isolate_stages": isolate}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"recipe-{'isolated' if isolate else 'in-process'}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ws = out / f"ws-{'isolated' if isolate else 'in-process'}"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.rmtree(ws.with_name(ws.name + "-remote"), ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flywheel", "run", "-w", str(ws), "-c", str(path), "-n", str(iterations)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return seconds, {name: [o.get("md5") for o in st.get("outs", [])] for name, st in lock.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny-arith.yaml")
    ap.add_argument("--iterations", type=int, default=1)
    args = ap.parse_args()
    out = ROOT / "bench" / "results" / "stage_isolation"
    inproc, a = run(args.config, False, args.iterations, out)
    iso, b = run(args.config, True, args.iterations, out)
    same = a == b
    print_table(f"process per stage ({args.config.name}, {args.iterations} iteration(s) after the warm-up)",
                ["run", "seconds", "note"],
                [["stages in the flow's process", inproc, ""],
                 ["a process per stage", iso, f"same dvc.lock hashes: {same}"],
                 ["ratio", iso / inproc, "cost of isolation"]])


if __name__ == "__main__":
    main()
