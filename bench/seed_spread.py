#!/usr/bin/env python3
"""The default recipe over several seeds: the flywheel's and the equal-steps control's held-out greedy
pass@1 at each iteration, with mean, min and max over seeds.

    python bench/seed_spread.py --seeds 0 1 2 --out /tmp/spread      # about 30 min a seed on 2 cores
    python bench/seed_spread.py --seeds 0 1 2 --out /tmp/spread --json docs/results/default_seeds.json

Each seed is the shipped recipe (`--config`, default configs/tiny-arith.yaml) with `run.seed` changed
and nothing else, run by `flywheel run` into OUT/seed<N>/ws (a finished seed is reused, so an
interrupted bench resumes), then `bench/control.py`'s control from that seed's iteration 0 (cached in
OUT/seed<N>/control.json). On the portable CPU path (the default) the figures are the same on any
x86-64 machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import print_table  # noqa: E402 - sets the CPU path before torch loads


def seed_recipe(config: Path, seed: int, dest: Path) -> Path:
    import yaml

    data = yaml.safe_load(config.read_text())
    data.setdefault("run", {})["seed"] = seed
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def flywheel_curve(ws: Path) -> list[float]:
    return [json.loads(p.read_text())["pass@1"] for p in sorted((ws / "data" / "iterations").glob("*/eval.json"))]


def run_seed(config: Path, seed: int, out: Path) -> dict:
    from bench.control import run_control
    from tasks.workspace.layout import Layout

    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ws = folder / "ws"
    iterations = __import__("yaml").safe_load(config.read_text())["run"]["iterations"]
    if not (ws / "records" / f"{iterations:04d}.json").is_file():  # a finished seed is reused, not extended
        recipe = seed_recipe(config, seed, folder / "recipe.yaml")
        subprocess.run([sys.executable, "-m", "flywheel", "run", "-w", str(ws), "-c", str(recipe)], check=True,
                       cwd=ROOT)
    cached = folder / "control.json"
    if cached.is_file():
        control = json.loads(cached.read_text())["control"]
    else:
        with tempfile.TemporaryDirectory() as scratch:
            control = run_control(Layout(ws.resolve()), iterations, Path(scratch))
        cached.write_text(json.dumps({"flywheel": flywheel_curve(ws), "control": control}, indent=2))
    return {"seed": seed, "flywheel": flywheel_curve(ws)[:iterations + 1], "control": control}


def spread(curves: list[list[float]]) -> list[dict]:
    return [{"mean": statistics.fmean(col), "min": min(col), "max": max(col)} for col in zip(*curves)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny-arith.yaml")
    ap.add_argument("--out", type=Path, required=True, help="one folder per seed (reused when finished)")
    ap.add_argument("--json", type=Path, help="also write every curve and the spread here")
    args = ap.parse_args()
    runs = [run_seed(args.config, s, args.out) for s in args.seeds]
    rows = []
    for r in runs:
        rows.append([f"seed {r['seed']} flywheel", *[f"{100 * v:.1f}" for v in r["flywheel"]]])
        rows.append([f"seed {r['seed']} control", *[f"{100 * v:.1f}" for v in r["control"]]])
    summary = {arm: spread([r[arm] for r in runs]) for arm in ("flywheel", "control")}
    for arm, cols in summary.items():
        rows.append([f"{arm}: mean (min to max)",
                     *[f"{100 * c['mean']:.1f} ({100 * c['min']:.1f} to {100 * c['max']:.1f})" for c in cols]])
    n = len(runs[0]["flywheel"])
    print_table("held-out greedy pass@1 (%)", ["run", *[f"it {i}" for i in range(n)]], rows)
    gains = [r["flywheel"][-1] - r["flywheel"][0] for r in runs]
    over = [r["flywheel"][-1] - r["control"][-1] for r in runs]
    print(f"gain over iteration 0 at iteration {n - 1}: " + ", ".join(f"{100 * g:+.1f}" for g in gains)
          + "; over the control: " + ", ".join(f"{100 * g:+.1f}" for g in over)
          + f" ({'every seed gains on both' if min(gains + over) > 0 else 'NOT every seed gains on both'})")
    if args.json:
        from tasks.numerics.fingerprint import cpu

        args.json.write_text(json.dumps({"config": str(args.config.relative_to(ROOT)), "cpu_path": "portable",
                                         "machine": cpu(), "command": "python bench/seed_spread.py --seeds "
                                         + " ".join(map(str, args.seeds)) + " --out DIR", "runs": runs,
                                         "spread": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
