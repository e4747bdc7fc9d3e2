"""Equal-compute control: is the gain the flywheel's, or just more training?

Starting from a workspace's iteration-0 checkpoint, train the same number of steps per iteration
on the labelled seed set only (no self-generated data), evaluate on the same held-out test set,
and print both curves side by side.

    python bench/control.py --workspace data/workspaces/default
"""

from __future__ import annotations

import sys

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench._common import print_table
from tasks.config.loading import load_recipe
from tasks.seeds import derive_seed
from tasks.stages.evaluate import evaluate
from tasks.stages.train import seed_examples, sft
from tasks.workspace.atomic import read_json
from tasks.workspace.layout import Layout


def run_control(layout: Layout, iterations: int, scratch: Path) -> list[float]:
    recipe = load_recipe(layout.recipe)
    seed_set = seed_examples(pl.read_parquet(layout.prompts))
    model = layout.model("0000")
    curve = [read_json(layout.eval("0000"))["pass@1"]]
    for i in range(1, iterations + 1):
        it = f"{i:04d}"
        params = load_recipe(layout.params(it)) if layout.params(it).is_file() else recipe
        out = scratch / f"control-{it}"
        init = model if params.train.mode == "continue" else layout.model("0000")
        sft(init, seed_set, params.train, derive_seed(params.run.seed, it, "train"), out)
        res = evaluate(out, layout.prompts, params.generate, params.evaluate, params.verifier, iteration=it,
                       seed=derive_seed(params.run.seed, it, "evaluate"), out_json=scratch / f"{it}.json",
                       out_samples=scratch / f"{it}.parquet")
        curve.append(res["pass@1"])
        model = out
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("data/workspaces/default"))
    ap.add_argument("--json", type=Path, help="also write the curves here")
    args = ap.parse_args()
    layout = Layout(args.workspace.resolve())
    flywheel = [read_json(p)["pass@1"] for p in sorted((layout.root / "data/iterations").glob("*/eval.json"))]
    iterations = len(flywheel) - 1
    with tempfile.TemporaryDirectory() as scratch:
        control = run_control(layout, iterations, Path(scratch))
    rows = [[i, f, c, f - c] for i, (f, c) in enumerate(zip(flywheel, control))]
    print_table("held-out greedy pass@1", ["iteration", "flywheel", "control (seed only)", "gap"], rows)
    print(f"flywheel gain 0->{iterations}: {100 * (flywheel[-1] - flywheel[0]):+.1f} points; "
          f"above control at {iterations}: {100 * (flywheel[-1] - control[-1]):+.1f} points")
    if args.json:
        args.json.write_text(json.dumps({"flywheel": flywheel, "control": control}, indent=2))


if __name__ == "__main__":
    main()
