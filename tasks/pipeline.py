"""The stage registry: binds each stage of dvc.yaml to its pure function and workspace paths.

`run_stage(layout, name, iteration)` is what both the Prefect flow and `flywheel stage`
(the command in dvc.yaml) call, so `dvc repro` re-runs exactly what the flow ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl
import yaml

from tasks.config.loading import load_recipe
from tasks.config.recipe import Recipe, TrainConfig
from tasks.numerics.state import enter_path, pin
from tasks.seeds import derive_seed
from tasks.workspace.atomic import read_json
from tasks.workspace.layout import Layout

BOOTSTRAP_STAGES = ("prepare", "base", "warmup", "baseline", "reward")
ITERATION_STAGES = ("calibrate", "generate", "score", "select", "check", "train", "evaluate", "promote")
GATED_STAGES = ("train", "evaluate", "promote")  # skipped when the data gate fails
BASELINE = "0000"
# The history dependency of an iteration with nothing to learn from (allocation off, or the workspace's
# first iteration): a file every workspace has and generate never reads. It cannot be the iteration's
# own scored table (a cycle) nor a path generate already depends on (DVC refuses a repeated dep).
NO_HISTORY = "data/iterations/0000/eval.json"


@dataclass(frozen=True)
class IterationVars:
    """What dvc.yaml's foreach needs per iteration: generation parent, training init, curriculum round."""

    parent: str
    init: str
    round: int
    first: str = "0001"  # the workspace's first iteration: the baseline for drift metrics
    gated: bool = True  # False once the data gate failed: train/evaluate/promote are not declared
    # generate's evidence for adaptive K: the previous iteration's scored table, else NO_HISTORY
    history: str = NO_HISTORY


def read_iteration_vars(layout: Layout) -> dict[str, IterationVars]:
    if not layout.iterations_vars.is_file():
        return {}
    data = yaml.safe_load(layout.iterations_vars.read_text()) or {}
    merged = {**(data.get("iterations") or {})}
    trained = data.get("trained") or {}
    return {it: IterationVars(**v, gated=it in trained) for it, v in sorted(merged.items())}


def write_iteration_vars(layout: Layout, table: dict[str, IterationVars]) -> None:
    from tasks.workspace.atomic import write_text

    iterations = {it: {"parent": v.parent, "init": v.init, "round": v.round, "first": v.first, "history": v.history}
                  for it, v in sorted(table.items())}
    trained = {it: iterations[it] for it, v in sorted(table.items()) if v.gated}
    write_text(layout.iterations_vars, yaml.safe_dump({"iterations": iterations, "trained": trained},
                                                      sort_keys=True))


def history_for(layout: Layout, recipe: Recipe, previous: str | None) -> str:
    """IterationVars.history of the iteration after `previous` (None: the workspace's first): that
    iteration's scored table when adaptive K is on, else NO_HISTORY."""
    return layout.rel(layout.scored(previous)) if previous and recipe.allocation.enabled else NO_HISTORY


def stage_recipe(layout: Layout, it: str | None) -> Recipe:
    return load_recipe(layout.params(it) if it else layout.recipe)


def _stage_fns(shard_runner=None) -> dict[str, Callable[[Layout, Recipe, str | None, IterationVars | None],
                                                       dict | None]]:
    # Imports stay inside so `flywheel --help` never loads torch.
    from tasks.placement import shards
    from tasks.stages import bootstrap
    from tasks.stages import calibrate
    from tasks.stages import check
    from tasks.stages import evaluate
    from tasks.stages import generate
    from tasks.stages import judge
    from tasks.stages import promote
    from tasks.stages import reward
    from tasks.stages import score
    from tasks.stages import select
    from tasks.stages.prepare import prepare

    def seed(r: Recipe, it: str | None, stage: str) -> int:
        return derive_seed(r.run.seed, it or BASELINE, stage)

    def ev(L: Layout, r: Recipe, it: str, model: Path) -> dict:
        return evaluate.evaluate(model, L.prompts, r.generate, r.evaluate, r.verifier, iteration=it,
                                 seed=seed(r, it, "evaluate"), out_json=L.eval(it), out_samples=L.eval_samples(it))

    return {
        "prepare": lambda L, r, it, v: {"prompts": str(prepare(r, L.prompts))},
        "base": lambda L, r, it, v: {"model": str(bootstrap.init_base(r, seed(r, None, "base"), L.base_model))},
        "warmup": lambda L, r, it, v: (
            (r.warmup.enabled and _launched(L, r.warmup, "warmup", None))
            or bootstrap.warmup(r, L.base_model, L.prompts, seed(r, None, "warmup"), L.model(BASELINE),
                                checkpoint_dir=_checkpoints(L, "warmup"))),
        "baseline": lambda L, r, it, v: ev(L, r, BASELINE, L.model(BASELINE)),
        "reward": lambda L, r, it, v: reward.build_reward_model(r, L.model(BASELINE), L.prompts,
                                                               seed(r, None, "reward"), L.reward_model),
        "calibrate": lambda L, r, it, v: calibrate.calibrate(
            r, L.model(v.parent), L.prompts, L.reward_model, iteration=it, seed=seed(r, it, "calibrate"),
            out_table=L.calibration(it), out_choice=L.choice(it),
            out_probe=L.probe(it) if L.declares(L.probe(it)) else None),
        "generate": lambda L, r, it, v: {"samples": str(
            (partial(shards.generate_sharded, scale=r.scale, runner=shard_runner) if shards.is_sharded(r, "generate")
             else generate.generate)(
                L.model(v.parent), L.prompts, r.generate, r.pool, iteration=it, round_index=v.round,
                temperature=read_json(L.choice(it))["temperature"], seed=seed(r, it, "generate"),
                out_path=L.samples(it), hints=r.hints, verifier=r.verifier,
                hint_seed=seed(r, it, "generate-hint"), **_allocation_args(L, r, it, v),
                timings=(t := {}))),  # the hint pass's own wall time and size, for the cost report
            **t},
        "score": lambda L, r, it, v: {"judged": str(judge.judge(  # empty unless reward.source is judge
            L.model(v.parent), L.samples(it), L.prompts, r.generate, r.reward, seed=seed(r, it, "judge"),
            iteration=it, out_path=L.judged(it))), "scored": str(
            (partial(shards.score_sharded, scale=r.scale, runner=shard_runner) if shards.is_sharded(r, "score")
             else partial(score.score, judged_path=L.judged(it)))(
                L.samples(it), L.prompts, r.verifier, r.reward, L.reward_model, L.scored(it)))},
        "select": lambda L, r, it, v: _select(L, r, it),
        "check": lambda L, r, it, v: check.check(L.scored(it), L.selected(it), L.prompts, L.scored(v.first),
                                                 _applied_choice(L, it), r, L.metrics(it), L.gate(it),
                                                 L.data_docs(it), allocation_path=L.allocation(it)),
        "train": lambda L, r, it, v: _train(L, r, it, v, seed(r, it, "train")),
        "evaluate": lambda L, r, it, v: ev(L, r, it, L.model(it)),
        "promote": lambda L, r, it, v: promote.promote(L.eval(it), L.eval(v.parent), L.gate(it), r.promote,
                                                       candidate_id=it, parent_id=v.parent, out_path=L.promotion(it)),
    }


def _select(L: Layout, r: Recipe, it: str) -> dict:
    """The threshold (the probe's, or re-swept on the full scored set), then the selected table. The
    threshold and the full-set grid are written where the workspace's dvc.yaml declares them (a
    workspace made before they existed has neither; preflight refuses threshold_from full there)."""
    from tasks.data.schema import CALIBRATION, CALIBRATION_OPTIONS, write_table
    from tasks.stages import select
    from tasks.stages.calibrate import as_chosen_by, reference_for, select_threshold
    from tasks.workspace.atomic import write_json

    prompts = pl.read_parquet(L.prompts)
    scored = pl.read_parquet(L.scored(it)) if r.calibrate.threshold_from == "full" else None
    grid, info = select_threshold(scored, prompts, r, read_json(L.choice(it)))
    if L.declares(L.calibration_full(it)):
        write_table(grid, L.calibration_full(it), CALIBRATION_OPTIONS if "set" in grid.columns else CALIBRATION)
    if L.declares(L.threshold(it)):
        write_json(L.threshold(it), info)
    reference = reference_for(r.calibrate, prompts) if r.calibrate.inject_reference == "train" else None
    view = partial(as_chosen_by, r) if r.calibrate.fidelity == "reference" else None
    out = select.select(L.scored(it), L.prompts, r.select, info["threshold"], L.selected(it), reference,
                        r.calibrate.reference_score, view=view)
    return {"selected": str(out), **({"threshold": info["threshold"]} if info["from"] == "full" else {})}


def _applied_choice(L: Layout, it: str) -> dict:
    """choice.json, with the threshold select applied where threshold.json records it."""
    choice = read_json(L.choice(it))
    if L.threshold(it).is_file():
        applied = read_json(L.threshold(it))
        choice = {**choice, "threshold": applied["threshold"]}
        if applied.get("from") == "full":
            choice["probe_threshold"] = applied["probe_threshold"]
    return choice


def _allocation_args(L: Layout, r: Recipe, it: str, v: IterationVars) -> dict:
    """generate's adaptive-K inputs: the recipe's section, the history table (when the iteration names one)
    and where the allocation table goes (only where the workspace's dvc.yaml declares it)."""
    history = L.root / v.history if v.history.endswith("/scored.parquet") else None
    return {"allocation": r.allocation, "history_path": history, "cap": r.select.cap_per_prompt,
            "allocation_out": L.allocation(it) if L.declares(L.allocation(it)) else None}


def _train(L: Layout, r: Recipe, it: str, v: IterationVars, seed: int) -> dict:
    from tasks.stages.train import seed_examples, sft

    if not read_json(L.gate(it))["passed"]:
        raise RuntimeError(f"iteration {it}: the data gate failed; refusing to train")
    if launched := _launched(L, r.train, "train", it):
        return launched
    if r.train.objective == "dpo":  # select wrote pairs; the reference is the parent (recipe_checks: continue)
        from tasks.stages.dpo import dpo

        return dpo(L.model(v.init), pl.read_parquet(L.selected(it)), r.train, seed, L.model(it),
                   checkpoint_dir=_checkpoints(L, it))
    selected = pl.read_parquet(L.selected(it)).select("prompt_id", "messages")
    parts = [selected]
    if r.train.include_seed:
        parts.insert(0, seed_examples(pl.read_parquet(L.prompts)))
    return sft(L.model(v.init), pl.concat(parts), r.train, seed, L.model(it), checkpoint_dir=_checkpoints(L, it))


def _checkpoints(L: Layout, name: str) -> Path:
    """Resumable training checkpoints: in the git-ignored state folder, never a DVC output."""
    return L.state_dir / "train-checkpoints" / name


def _launched(L: Layout, cfg: TrainConfig, stage: str, it: str | None) -> dict | None:
    """With a launcher in the recipe, run the stage as a multi-process job and return its result."""
    from tasks.models.sft_setup import check_hardware, resolve_precision
    from tasks.placement.launch import run_launched, should_launch

    if not should_launch(cfg):
        return None
    check_hardware(cfg, stage)
    return run_launched(cfg, resolve_precision(cfg, stage), L.root, stage, it)


def run_stage(layout: Layout, stage: str, it: str | None = None, shard_runner=None) -> dict | None:
    """Run one stage for one iteration (or a bootstrap stage with `it=None`).

    `shard_runner` (tasks.placement.shards.ShardRunner) maps a sharded stage's shards over workers; the flow
    and `flywheel stage` hand the Dask one (flows/sharded.py). Without it they run in this process."""
    if stage not in BOOTSTRAP_STAGES + ITERATION_STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(BOOTSTRAP_STAGES + ITERATION_STAGES)}")
    v = read_iteration_vars(layout).get(it) if it else None
    if stage in ITERATION_STAGES and v is None:
        raise ValueError(f"iteration {it!r} is not declared in {layout.iterations_vars.name}")
    recipe = stage_recipe(layout, it if stage in ITERATION_STAGES else None)
    enter_path(recipe.numerics)  # a process that has not loaded torch yet takes the workspace's CPU path
    fns = _stage_fns(shard_runner)
    pin(recipe.numerics)  # whatever ran before in this process
    return fns[stage](layout, recipe, it, v)


def dvc_stage_name(stage: str, it: str | None) -> str:
    return f"{stage}@{it}" if stage in ITERATION_STAGES else stage
