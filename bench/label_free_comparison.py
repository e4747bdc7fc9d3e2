"""Labelled, label-free and DPO iterations against the equal-steps control, on the embedded default.

    python bench/label_free_comparison.py --iterations 3
    python bench/label_free_comparison.py --iterations 2 --set pool.prompts_per_iteration=300
    python bench/label_free_comparison.py --keep DIR --resume ...   # after an interruption, same arguments

Arms, each the shipped preset (so they differ only in their method keys):
  (a) labelled    configs/tiny-arith.yaml            verified samples (gold answer + chain check), SFT
  (b) label-free  configs/tiny-arith-labelfree.yaml  majority-vote pseudo-labels, gold never read, SFT
  (c) DPO         configs/tiny-arith-dpo.yaml        pairs of verified/failed samples, DPO vs the parent
  (d) control     the same training steps on the labelled seed set only (bench/control.py), from (a)'s
                  iteration-0 model
Every arm starts from the same iteration-0 model (prepare, base and warm-up are computed once and
copied: their outputs depend only on the recipe's shared sections and seeds); the label-free arm
trains its own reward model, on pseudo-labels. `--set key=value` applies to every arm and is
printed with the results. Prints held-out greedy pass@1 per iteration, the label-free arm's
pseudo-label accuracy (against gold, reported only), and the two goals of issue 14.
"""

from __future__ import annotations

import sys

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench._common import copy_iteration_zero, print_table
from bench.control import run_control
from bench.method_comparison import _merge
from tasks.config.loading import load_recipe, recipe_from_dict, recipe_to_yaml, write_recipe
from tasks.pipeline import GATED_STAGES, ITERATION_STAGES, IterationVars, run_stage, write_iteration_vars
from tasks.workspace.atomic import read_json
from tasks.workspace.layout import Layout

ARMS = {"labelled": "configs/tiny-arith.yaml", "label-free": "configs/tiny-arith-labelfree.yaml",
        "dpo": "configs/tiny-arith-dpo.yaml"}


def parse_sets(items: list[str]) -> dict:
    """`a.b=3` pairs -> a nested override dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def finished(layout: Layout, it: str) -> bool:
    """The iteration ran to its end: promoted or held, or stopped by its data gate."""
    return layout.promotion(it).is_file() or (layout.gate(it).is_file() and not read_json(layout.gate(it))["passed"])


def bootstrap_arm(layout: Layout, recipe, bootstrap: Path | None) -> None:
    """Iteration 0: computed, or the shared part copied from another arm's folder (and the reward model
    rebuilt unless its verifier and reward settings match)."""
    if bootstrap is None:
        for name in ("prepare", "base", "warmup", "baseline", "reward"):
            run_stage(layout, name)
        return
    if not copy_iteration_zero(layout, recipe, bootstrap):
        run_stage(layout, "reward")


def run_arm(recipe_data: dict, root: Path, iterations: int, bootstrap: Path | None, resume: bool = False) -> dict:
    """Iteration 0, then the iterations. With `resume`, an arm folder left by an interrupted run keeps its
    iteration 0 and finished iterations (stages are deterministic, so an unfinished one simply runs again)."""
    recipe = recipe_from_dict(recipe_data)
    layout = Layout(root)
    start = time.perf_counter()
    resume = resume and layout.recipe.is_file() and layout.eval("0000").is_file() and layout.reward_model.is_dir()
    if resume and load_recipe(layout.recipe) != recipe:
        raise SystemExit(f"{root}: made with another recipe; resume with the same --set overrides")
    write_recipe(recipe, layout.recipe)
    if not resume:
        bootstrap_arm(layout, recipe, bootstrap)
    parent, table = "0000", {}
    for i in range(1, iterations + 1):
        it = f"{i:04d}"
        layout.params(it).parent.mkdir(parents=True, exist_ok=True)
        layout.params(it).write_text(recipe_to_yaml(recipe))
        table[it] = IterationVars(parent=parent, init=parent if recipe.train.mode == "continue" else "0000", round=i)
        write_iteration_vars(layout, table)
        if not (resume and finished(layout, it)):
            for name in ITERATION_STAGES:
                if name in GATED_STAGES and not read_json(layout.gate(it))["passed"]:
                    break
                run_stage(layout, name, it)
        parent = read_json(layout.promotion(it))["next_parent"] if layout.promotion(it).is_file() else parent
    return {"seconds": round(time.perf_counter() - start), "rows": read_rows(layout, iterations)}


def read_rows(layout: Layout, iterations: int) -> list[dict]:
    rows = []
    for i in range(iterations + 1):
        it = f"{i:04d}"
        ev = read_json(layout.eval(it)) if layout.eval(it).is_file() else {}
        m = read_json(layout.metrics(it)) if i and layout.metrics(it).is_file() else {}
        gate = read_json(layout.gate(it)) if i and layout.gate(it).is_file() else {}
        rows.append({"iteration": i, "pass@1": ev.get("pass@1"), "n_selected": m.get("n_selected"),
                     "pool_coverage": m.get("coverage"), "gate_passed": gate.get("passed"),
                     "pseudo_label_accuracy": m.get("pseudo_label_accuracy"),
                     "pseudo_label_coverage": m.get("pseudo_label_coverage")})
    return rows


AGREEMENT_STEPS = (0.5, 0.625, 0.75, 0.875, 1.0)


def vote_precision(layout: Layout, iterations: int) -> list[list]:
    """What a stricter `min_agreement` would have bought, from a label-free arm's own tables: per iteration
    and vote share s, the share of pool prompts whose winning answer had at least s of the votes, and how
    many of those winners match gold. Only shares at or above the run's min_agreement can be seen (below
    it no sample was marked as agreeing)."""
    import polars as pl

    gold = pl.read_parquet(layout.prompts).select("prompt_id", "answer")
    rows = []
    for i in range(1, iterations + 1):
        if not layout.scored(f"{i:04d}").is_file():
            continue
        scored = pl.read_parquet(layout.scored(f"{i:04d}"))
        per = (scored.group_by("prompt_id")
               .agg(share=pl.col("correct").mean(), label=pl.col("extracted_answer").filter(pl.col("correct")).first())
               .join(gold, on="prompt_id", how="left").with_columns(right=pl.col("label") == pl.col("answer")))
        for s in AGREEMENT_STEPS:
            kept = per.filter(pl.col("share") >= s - 1e-9)
            rows.append([i, f"{s:.3f}", _fmt(kept.height / per.height),
                         _fmt(float(kept["right"].mean()) if kept.height else None)])
    return rows


def _fmt(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key in every arm (e.g. pool.prompts_per_iteration=300)")
    ap.add_argument("--arms", default="labelled,label-free,dpo", help="comma-separated subset of the arms")
    ap.add_argument("--keep", type=Path, help="keep the arms' folders here instead of a temporary folder")
    ap.add_argument("--bootstrap-from", type=Path,
                    help="copy iteration 0 (prompts, base, warm-up, baseline, reward) from this folder of an earlier "
                         "run of the same recipe instead of computing it")
    ap.add_argument("--resume", action="store_true",
                    help="with --keep: continue an interrupted run, keeping the arms' finished iterations")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    sets = parse_sets(args.set)
    arms = [a for a in ARMS if a in args.arms.split(",")]
    print(f"iterations {args.iterations}; overrides for every arm: {sets or 'none'}", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="flywheel-labelfree-") as tmp:
        base = (args.keep or Path(tmp)).resolve()
        first: Path | None = args.bootstrap_from.resolve() if args.bootstrap_from else None
        for name in arms:
            data = _merge(yaml.safe_load((ROOT / ARMS[name]).read_text()), sets)
            root = base / name
            results[name] = run_arm(data, root, args.iterations, first, resume=args.resume and args.keep is not None)
            print(f"{name}: {results[name]['seconds']} s", flush=True)
            first = root if first is None else first
        if "labelled" in results:
            start = time.perf_counter()
            control = run_control(Layout(base / "labelled"), args.iterations, base / "control")
            results["control"] = {"seconds": round(time.perf_counter() - start),
                                  "rows": [{"iteration": i, "pass@1": c} for i, c in enumerate(control)]}
        votes = vote_precision(Layout(base / "label-free"), args.iterations) if "label-free" in results else []
    names = list(results)
    header = ["iteration"] + [f"{n} pass@1" for n in names] + ["label-free pseudo-label acc"]
    table = []
    for i in range(args.iterations + 1):
        lf = results.get("label-free", {}).get("rows", [{}] * (i + 1))[i]
        table.append([i] + [_fmt(results[n]["rows"][i]["pass@1"]) for n in names]
                     + [_fmt(lf.get("pseudo_label_accuracy"))])
    print_table("held-out greedy pass@1 (%) by iteration; pseudo-label accuracy: share of labelled pool prompts "
                "whose vote matches gold", header, table)
    last = args.iterations
    p = {n: results[n]["rows"][last]["pass@1"] for n in names}
    if {"labelled", "label-free", "control"} <= set(p) and None not in p.values():
        gain, lf_gain = p["labelled"] - p["control"], p["label-free"] - p["control"]
        share = lf_gain / gain if gain > 0 else float("nan")
        print(f"at iteration {last}: labelled {100 * gain:+.1f} points over the control, label-free "
              f"{100 * lf_gain:+.1f}: keeps {100 * share:.0f}% of the gain (goal: at least 60%)")
    if {"labelled", "dpo"} <= set(p) and None not in (p["labelled"], p["dpo"]):
        print(f"at iteration {last}: DPO {100 * p['dpo']:.1f} vs SFT {100 * p['labelled']:.1f} "
              f"({'meets' if p['dpo'] >= p['labelled'] else 'misses'} the goal DPO >= SFT)")
    if votes:
        print_table("label-free arm: pseudo-labels by the vote share of the winning answer (what a stricter "
                    "min_agreement would keep, and how often it is right)",
                    ["iteration", "vote share at least", "pool prompts labelled %", "labels right %"],
                    votes)
    for n in names:
        print(f"{n}: {results[n]['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps({"overrides": sets, "iterations": args.iterations, **results}, indent=2))


if __name__ == "__main__":
    main()
