"""B-STaR balancing against fixed-config STaR on the embedded default, same iterations and budget.

    python bench/method_comparison.py --config configs/tiny-arith.yaml --iterations 3

B-STaR: per-iteration calibration of (temperature, threshold) on the probe set, with the tiny
outcome reward model. STaR: temperature 1.0, threshold 0 on score = correct (no reward model).
Both sample K per pool prompt and train the same number of steps. B-STaR also spends its probe
sampling on calibration; the table reports that extra sampling so the comparison stays honest.
Prints held-out pass@1 / pass@K and the pool's distinct-correct ratio per iteration.
"""

from __future__ import annotations

import sys

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import print_table
from bench.orchestration_overhead import bare_run
from tasks.audit.report import pass_at_k_entry
from tasks.workspace.atomic import read_json
from tasks.workspace.layout import Layout

VARIANTS = {
    "B-STaR": {"calibrate": {"enabled": True}, "reward": {"source": "train"}},
    "STaR": {"calibrate": {"enabled": False}, "reward": {"source": "none"},
             "generate": {"temperature": 1.0}, "select": {"threshold": 0.0}},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def run_variant(config: Path, overrides: dict, root: Path, iterations: int) -> dict:
    recipe = _merge(yaml.safe_load(config.read_text()), overrides)
    recipe_path = root.parent / f"{root.name}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    start = time.perf_counter()
    bare_run(recipe_path, root, iterations)
    return read_rows(root, iterations) | {"seconds": time.perf_counter() - start}


def read_rows(root: Path, iterations: int) -> dict:
    """Per-iteration figures of a finished workspace (or bare run folder)."""
    layout = Layout(root)
    rows = []
    for i in range(iterations + 1):
        it = f"{i:04d}"
        ev = read_json(layout.eval(it))
        metrics = read_json(layout.metrics(it)) if i else {}
        k_key = pass_at_k_entry(ev)[0]
        choice = read_json(layout.choice(it)) if i else {}
        rows.append({"iteration": i, "pass@1": ev["pass@1"], "pass@k": ev[k_key],
                     "distinct_ratio": metrics.get("distinct_correct_ratio"),
                     "temperature": choice.get("temperature"), "threshold": choice.get("threshold")})
    return {"rows": rows, "seconds": None}  # None: a reused workspace, not timed here


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/tiny-arith.yaml"))
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--bstar-workspace", type=Path,
                    help="reuse a finished B-STaR run (e.g. the default workspace) instead of running that arm")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="flywheel-methods-") as tmp:
        for name, over in VARIANTS.items():
            if name == "B-STaR" and args.bstar_workspace:
                results[name] = read_rows(args.bstar_workspace.resolve(), args.iterations)
                continue
            results[name] = run_variant(args.config.resolve(), over, Path(tmp) / name, args.iterations)
    header = ["iteration"] + [f"{m} {col}" for m in results for col in ("pass@1", "pass@K", "distinct", "T", "thr")]
    rows = []
    for i in range(args.iterations + 1):
        row = [i]
        for res in results.values():
            r = res["rows"][i]
            row += [r["pass@1"], r["pass@k"], r["distinct_ratio"] if r["distinct_ratio"] is not None else "—",
                    r["temperature"] if r["temperature"] is not None else "—",
                    r["threshold"] if r["threshold"] is not None else "—"]
        rows.append(row)
    print_table("B-STaR balancing vs fixed-config STaR (held-out test; distinct = pool distinct-correct ratio)",
                header, rows)
    for name, res in results.items():
        print(f"{name}: reused workspace" if res["seconds"] is None else f"{name}: {res['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
