"""Stage `promote`: the candidate becomes the next parent only if the gate passed and
held-out pass@1 did not drop by more than the tolerance."""

from __future__ import annotations

from pathlib import Path

from tasks.config.recipe import PromoteConfig
from tasks.workspace.atomic import read_json, write_json


def decide(candidate: dict, parent: dict, gate: dict, cfg: PromoteConfig, *, candidate_id: str,
           parent_id: str) -> dict:
    delta = round(candidate["pass@1"] - parent["pass@1"], 6)
    if not gate.get("passed", False):
        promoted, reason = False, "data gate failed: " + "; ".join(gate.get("failures", []))
    elif delta < -cfg.tolerance:
        promoted, reason = False, f"pass@1 fell by {-delta:.3f} (> tolerance {cfg.tolerance})"
    else:
        promoted, reason = True, f"pass@1 {parent['pass@1']:.3f} -> {candidate['pass@1']:.3f} (delta {delta:+.3f})"
    return {"promoted": promoted, "reason": reason, "candidate": candidate_id, "parent": parent_id,
            "next_parent": candidate_id if promoted else parent_id, "delta_pass@1": delta}


def promote(candidate_eval: Path, parent_eval: Path, gate_path: Path, cfg: PromoteConfig, *,
            candidate_id: str, parent_id: str, out_path: Path) -> dict:
    decision = decide(read_json(candidate_eval), read_json(parent_eval), read_json(gate_path), cfg,
                      candidate_id=candidate_id, parent_id=parent_id)
    write_json(out_path, decision)
    return decision
