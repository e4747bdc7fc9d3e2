"""Stage `check`: the iteration's data metrics and the gate that must pass before training."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.atomic import write_json
from tasks.config import CheckConfig
from tasks.metrics import summarise


def gate_failures(metrics: dict, n_selected: int, cfg: CheckConfig) -> list[str]:
    failures = []
    if metrics.get("coverage", 0.0) < cfg.min_coverage:
        failures.append(f"coverage {metrics.get('coverage', 0.0):.3f} < min_coverage {cfg.min_coverage}")
    if metrics.get("truncation_rate", 0.0) > cfg.max_truncation_rate:
        failures.append(f"truncation_rate {metrics['truncation_rate']:.3f} > max {cfg.max_truncation_rate}")
    if n_selected < cfg.min_selected:
        failures.append(f"selected rows {n_selected} < min_selected {cfg.min_selected}")
    return failures


def check(scored_path: Path, selected_path: Path, choice: dict, cfg: CheckConfig, k: int,
          metrics_path: Path, gate_path: Path) -> dict:
    scored = pl.read_parquet(scored_path)
    n_selected = pl.scan_parquet(selected_path).select(pl.len()).collect().item()
    metrics = summarise(scored, k) | {"n_selected": n_selected, "temperature": choice["temperature"],
                                      "threshold": choice["threshold"]}
    failures = gate_failures(metrics, n_selected, cfg)
    gate = {"passed": not failures, "failures": failures}
    write_json(metrics_path, metrics)
    write_json(gate_path, gate)
    return gate
