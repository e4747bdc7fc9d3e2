"""Stage `check`: the iteration's B-STaR metrics and the data gate that must pass before training."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.atomic import write_json
from tasks.bstar_metrics import hard_prompts, iteration_metrics
from tasks.config import CheckConfig, Recipe


def gate_failures(metrics: dict, n_selected: int, cfg: CheckConfig) -> list[str]:
    failures = []
    if metrics.get("coverage", 0.0) < cfg.min_coverage:
        failures.append(f"coverage {metrics.get('coverage', 0.0):.3f} < min_coverage {cfg.min_coverage}")
    if metrics.get("truncation_rate", 0.0) > cfg.max_truncation_rate:
        failures.append(f"truncation_rate {metrics['truncation_rate']:.3f} > max {cfg.max_truncation_rate}")
    if n_selected < cfg.min_selected:
        failures.append(f"selected rows {n_selected} < min_selected {cfg.min_selected}")
    return failures


def compute_metrics(scored: pl.DataFrame, selected: pl.DataFrame, baseline_scored: pl.DataFrame, choice: dict,
                    recipe: Recipe) -> dict:
    """All exploration, exploitation, balance and collapse metrics; drift is against the workspace's
    first iteration (samples of the iteration-0 model)."""
    kw = {"k": recipe.generate.k, "n_star": recipe.calibrate.n_star, "threshold": choice["threshold"]}
    baseline = iteration_metrics(baseline_scored, None, **kw)
    metrics = iteration_metrics(scored, selected, baseline=baseline, hard_prompt_ids=hard_prompts(baseline_scored),
                                **kw)
    return metrics | {"temperature": choice["temperature"], "threshold": choice["threshold"]}


def check(scored_path: Path, selected_path: Path, baseline_scored_path: Path, choice: dict, recipe: Recipe,
          metrics_path: Path, gate_path: Path) -> dict:
    scored = pl.read_parquet(scored_path)
    selected = pl.read_parquet(selected_path)
    metrics = compute_metrics(scored, selected, pl.read_parquet(baseline_scored_path), choice, recipe)
    failures = gate_failures(metrics, selected.height, recipe.check)
    gate = {"passed": not failures, "failures": failures}
    write_json(metrics_path, metrics)
    write_json(gate_path, gate)
    return gate
