"""Stage `check`: the iteration's B-STaR metrics and the data gate that must pass before training."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import Recipe
from tasks.data.schema import SAMPLES
from tasks.metrics.bstar import hard_prompts, iteration_metrics, self_rows, tail_by_origin
from tasks.workspace.atomic import write_json


def compute_metrics(scored: pl.DataFrame, selected: pl.DataFrame, baseline_scored: pl.DataFrame, choice: dict,
                    recipe: Recipe, prompts: pl.DataFrame | None = None) -> dict:
    """All exploration, exploitation, balance and collapse metrics; drift is against the workspace's
    first iteration (samples of the iteration-0 model). With majority vote, the pseudo-label monitor too.
    With the hint pass on (an origin column), these run over the first pass's samples, and the tail by
    origin is added (`tail_by_origin`)."""
    with_hints = scored
    scored, baseline_scored = self_rows(scored), self_rows(baseline_scored)
    kw = {"k": recipe.generate.k, "n_star": recipe.calibrate.n_star, "threshold": choice["threshold"]}
    baseline = iteration_metrics(baseline_scored, None, **kw)
    cal = recipe.calibrate  # the balance score as calibration computed it (B-STaR reference-code options)
    reference = None
    if cal.inject_reference != "none" and prompts is not None:
        from tasks.data.arith import reference_solutions

        reference = reference_solutions(prompts)
    metrics = iteration_metrics(scored, selected, baseline=baseline, hard_prompt_ids=hard_prompts(baseline_scored),
                                average_over=cal.average_over, reference=reference,
                                reference_score=cal.reference_score, **kw)
    metrics |= {"temperature": choice["temperature"], "threshold": choice["threshold"]}
    if "probe_threshold" in choice:  # threshold_from full: the probe's, beside the applied one
        metrics["probe_threshold"] = choice["probe_threshold"]
    if recipe.verifier.type == "majority_vote" and prompts is not None:
        metrics |= vote_monitor(scored, baseline_scored, prompts, recipe)
    if "origin" in with_hints.columns:
        metrics |= tail_by_origin(with_hints, selected, hard_prompt_ids=hard_prompts(baseline_scored),
                                  difficulty=prompts)
    return metrics


def vote_monitor(scored: pl.DataFrame, baseline_scored: pl.DataFrame, prompts: pl.DataFrame, recipe: Recipe) -> dict:
    """Pseudo-label coverage, agreement and accuracy (against gold, where it exists), and how the accuracy
    moved since the workspace's first iteration. Reported only: selection never sees gold."""
    from tasks.verify.majority_vote import pseudo_label_metrics

    now = pseudo_label_metrics(scored, prompts, recipe.verifier.vote)
    first = pseudo_label_metrics(baseline_scored, prompts, recipe.verifier.vote)["pseudo_label_accuracy"]
    acc = now["pseudo_label_accuracy"]
    return now | {"pseudo_label_accuracy_change": None if acc is None or first is None else round(acc - first, 6)}


def check(scored_path: Path, selected_path: Path, prompts_path: Path, baseline_scored_path: Path, choice: dict,
          recipe: Recipe, metrics_path: Path, gate_path: Path, docs_dir: Path | None = None,
          allocation_path: Path | None = None) -> dict:
    """Metrics, then the Great Expectations gate over prompts, samples, scored, selected and metrics.

    gate.json (versioned) holds the verdict and one line per failed expectation; the Data Docs
    pages go to `docs_dir` (not versioned: GX stamps them with run times and random ids)."""
    from tasks.metrics.expectations import validate_tables

    prompts = pl.read_parquet(prompts_path)
    scored = pl.read_parquet(scored_path)
    selected = pl.read_parquet(selected_path)
    metrics = compute_metrics(scored, selected, pl.read_parquet(baseline_scored_path), choice, recipe, prompts)
    if recipe.allocation.enabled and allocation_path is not None:  # adaptive K: how the budget was spent
        from tasks.sampling.allocation import allocation_metrics

        metrics |= allocation_metrics(pl.read_parquet(allocation_path), scored, recipe.generate.k)
    samples = scored.select(list(SAMPLES.columns))
    test_ids = prompts.filter(pl.col("split") == "test")["prompt_id"].to_list()
    chosen = "pairs" if recipe.select.mode == "pairs" else "selected"  # select's output table
    result = validate_tables(tables={"prompts": prompts, "samples": samples, "scored": scored, chosen: selected},
                             metrics=metrics, test_prompt_ids=test_ids, cfg=recipe.check, docs_dir=docs_dir,
                             min_margin=recipe.select.pairs.min_margin)
    gate = {"passed": result["passed"], "failures": result["failures"], "suites": result["suites"]}
    write_json(metrics_path, metrics)
    write_json(gate_path, gate)
    return gate | {"data_docs": str(docs_dir / "summary.html") if docs_dir and result.get("data_docs") else None}
