#!/usr/bin/env python3
"""B-STaR's choice on a real run, three ways: as the run made it, as the reference code makes it, and as
calibrate.fidelity `reference` makes it, on the same samples.

    python -m bench.bstar_fidelity --workspace data/workspaces/default [--json docs/results/bstar_fidelity.json]

For each iteration, on the workspace's own probe samples (probe.parquet, kept since calibrate.fidelity)
and pool (scored.parquet):
- the run: its (temperature, threshold) and the training rows select kept;
- the reference code (bench/bstar_reference_port.py, a line-by-line port of hkust-nlp/B-STaR a0f5d95)
  on the probe, then its threshold re-swept on the pool, and the rows it would train on (no per-query
  cap binds here: the pool is smaller than its target size);
- this project's `reference` rules on the same tables: the chosen cells, the rows, and the largest
  difference between its balance grid and the reference code's over every (temperature, threshold).
The pool was sampled at the run's temperature, so the re-sweeps use those samples whatever temperature
the probe chose (as the reference code would if it had chosen the same).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

from bench._common import print_table
from bench.bstar_reference_port import MARK, NO_CAP, determine_hyper, find_strategy, process_data

PROMPT = "# Question\n\n{}\n\n# Solution\n\n"


def reference_records(scored: pl.DataFrame, prompts: pl.DataFrame, official: pl.DataFrame
                      ) -> tuple[list[dict], list[dict]]:
    """The reference's two files for one temperature: samples (output with its final answer after the
    reference's marker; none when the sample states none) and official responses (ending in the gold)."""
    q = prompts.select("prompt_id", "answer", prompt=pl.format(PROMPT, pl.col("text")))
    rows = scored.join(q, on="prompt_id", how="left").sort("prompt_id", "sample_idx")
    outputs = rows.select(pl.when(pl.col("extracted_answer").is_null()).then(pl.col("text"))
                          .otherwise(pl.col("text") + MARK + pl.col("extracted_answer")))["text"].to_list()
    inputs = [{"idx": pid, "prompt": p, "output": o, "reward": [0.0 if r is None else float(r)]}
              for pid, p, o, r in zip(rows["prompt_id"], rows["prompt"], outputs, rows["reward"])]
    refs = official.join(q, on="prompt_id", how="inner").with_columns(
        response=pl.col("text") + MARK + pl.col("answer"))
    return inputs, [{"prompt": p, "response": r} for p, r in zip(refs["prompt"], refs["response"])]


def ours_reference_mode(table: pl.DataFrame, prompts: pl.DataFrame, temps: list[float], k: int,
                        set_name: str) -> pl.DataFrame:
    from tasks.config.recipe import CalibrateConfig
    from tasks.data.arith import reference_solutions
    from tasks.metrics.bstar_reference import reference_view
    from tasks.stages.calibrate import grid_for

    cfg = CalibrateConfig(enabled=True, fidelity="reference", temperatures=temps, k=k)
    view = reference_view(table, prompts, "arith_chain")
    present = prompts.join(table.select("prompt_id").unique(), on="prompt_id", how="semi")
    return grid_for(view, cfg, reference_solutions(present), k=k, set_name=set_name)


def grid_gap(grid: pl.DataFrame, port_cells: dict[float, list[tuple]]) -> float:
    ours = grid.sort("temperature", "threshold")
    theirs = np.array([acc for t in sorted(port_cells) for _, acc, *_ in port_cells[t]], dtype=np.float64)
    return float(np.max(np.abs(ours["balance_score"].to_numpy() - theirs)))


def iteration(ws: Path, it: str, prompts: pl.DataFrame) -> dict | None:
    from tasks.data.arith import reference_solutions
    from tasks.metrics.calibration_grid import choose
    from tasks.workspace.atomic import read_json

    folder = ws / "data" / "iterations" / it
    probe_path = folder / "probe.parquet"
    if not probe_path.is_file() or not (folder / "selected.parquet").is_file():
        return None  # an iteration from before probe.parquet, or not finished
    if pl.read_parquet(probe_path).height == 0:
        return None  # calibration off
    recipe = __import__("yaml").safe_load((ws / "flywheel.yaml").read_text())
    k_probe = recipe["calibrate"]["k"]
    probe = pl.read_parquet(probe_path)
    temps = sorted(probe["temperature"].unique().to_list())
    official = reference_solutions(prompts)
    # the reference code on the probe, one sweep per temperature
    per_t = {t: reference_records(probe.filter(pl.col("temperature") == t), prompts, official) for t in temps}
    port = determine_hyper(per_t, NO_CAP, exact=False)
    ours_probe = ours_reference_mode(probe, prompts, temps, k_probe, "probe")
    mode_probe = choose(ours_probe)
    # the threshold re-swept on the pool, and the rows each would train on
    scored = pl.read_parquet(folder / "scored.parquet")
    inputs, refs = reference_records(scored, prompts, official)
    _, port_full_thr, cells = find_strategy(process_data(inputs, refs, __import__("random").Random(0)), NO_CAP)
    port_rows = next(len(unique) for thr, _, unique in cells if thr == port_full_thr)
    pool_t = float(read_json(folder / "choice.json")["temperature"])
    ours_full = ours_reference_mode(scored.with_columns(temperature=pl.lit(pool_t)), prompts, [pool_t],
                                    recipe["generate"]["k"], "full")
    mode_full = ours_full.filter(pl.col("chosen")).row(0, named=True)
    choice = read_json(folder / "choice.json")
    return {
        "iteration": it,
        "run": {"fidelity": choice.get("fidelity", "legacy"), "temperature": choice["temperature"],
                "threshold": choice["threshold"], "balance_score": choice.get("balance_score"),
                "rows": pl.read_parquet(folder / "selected.parquet").height},
        "reference_code": {"temperature": port.temperature, "probe_threshold": port.threshold,
                           "probe_balance": float(port.balance), "full_threshold": port_full_thr,
                           "rows": port_rows},
        "reference_mode": {"temperature": mode_probe["temperature"], "probe_threshold": mode_probe["threshold"],
                           "probe_balance": mode_probe["balance_score"], "full_threshold": mode_full["threshold"],
                           "rows_uncapped": mode_full["n_selected"]},
        "max_grid_gap": {"probe": grid_gap(ours_probe, port.cells), "full": grid_gap(
            ours_full, {pool_t: [(thr, acc) for thr, acc, _ in cells]})},
        "cells_compared": {"probe": ours_probe.height, "full": ours_full.height},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    ws = args.workspace.resolve()
    prompts = pl.read_parquet(ws / "data" / "prompts" / "prompts.parquet")
    its = sorted(p.name for p in (ws / "data" / "iterations").iterdir() if p.name != "0000")
    rows = [r for it in its if (r := iteration(ws, it, prompts)) is not None]
    if not rows:
        sys.exit(f"error: {ws}: no iteration has probe samples (probe.parquet); run it with this release")
    g = lambda v: f"{v:g}"  # noqa: E731
    print_table("B-STaR's choice, three ways (T / probe threshold / threshold applied; training rows)",
                ["it", "the run", "reference code", "reference rules", "max |grid gap| probe, full"],
                [[r["iteration"],
                  f"{g(r['run']['temperature'])} / {g(r['run']['threshold'])}; {r['run']['rows']} rows",
                  f"{g(r['reference_code']['temperature'])} / {r['reference_code']['probe_threshold']:.2f} / "
                  f"{r['reference_code']['full_threshold']:.2f}; {r['reference_code']['rows']} rows",
                  f"{g(r['reference_mode']['temperature'])} / {r['reference_mode']['probe_threshold']:.2f} / "
                  f"{r['reference_mode']['full_threshold']:.2f}; {r['reference_mode']['rows_uncapped']} rows",
                  f"{r['max_grid_gap']['probe']:.1e}, {r['max_grid_gap']['full']:.1e}"] for r in rows])
    same = all(r["reference_code"]["temperature"] == r["reference_mode"]["temperature"]
               and r["reference_code"]["probe_threshold"] == r["reference_mode"]["probe_threshold"]
               and r["reference_code"]["full_threshold"] == r["reference_mode"]["full_threshold"]
               and r["reference_code"]["rows"] == r["reference_mode"]["rows_uncapped"] for r in rows)
    print(f"reference rules {'make' if same else 'do NOT make'} the reference code's choice in every iteration")
    if args.json:
        from tasks.numerics.fingerprint import cpu

        args.json.write_text(json.dumps({"workspace": ws.name, "machine": cpu(), "command":
                                         "python -m bench.bstar_fidelity --workspace WS", "iterations": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
