"""What each stage cost and produced: wall time, tokens, peak memory, and one key figure.

The flow measures every stage it runs (flows/stage_tasks.py) and keeps the entries in the
workspace's git-ignored state folder; `finish_iteration` puts their sum in the iteration's run
record under `cost`. Nothing here is a DVC output, so no versioned artifact changes.

Tokens generated are counted from the samples tables the stage writes (generate; evaluate and the
baseline evaluation), training tokens are the non-padding tokens in the batches the trainer drew
(warmup, train). Peak memory is the largest resident set of the stage's process and the processes
it waited for; a stage run in the flow's own process reports that process's high-water mark so far.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import polars as pl

from tasks.workspace.atomic import read_json, write_json
from tasks.workspace.layout import Layout

GENERATING = {"generate": "samples", "evaluate": "eval_samples", "baseline": "eval_samples"}
TRAINING = ("warmup", "train")


def own_peak_rss_mb(children: bool = False) -> float | None:
    """This process's peak resident set so far (VmHWM: its own, unlike ru_maxrss, which also counts
    the parent's pages a child holds between fork and exec); with `children`, or the largest of the
    processes it waited for, if larger."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    if children:
        kib = max(kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kib / 1024, 1)


def _rows(path: Path) -> int | None:
    return pl.scan_parquet(path).select(pl.len()).collect().item() if path.is_file() else None


def _tokens(path: Path) -> int | None:
    if not path.is_file():
        return None
    return int(pl.scan_parquet(path).select(pl.col("n_tokens").cast(pl.Int64).sum()).collect().item() or 0)


def _per_s(n: int | None, wall: float) -> float | None:
    return round(n / wall, 1) if n is not None and wall > 0 else None


def stage_cost(layout: Layout, stage: str, it: str, result: dict | None, wall_s: float,
               peak_rss_mb: float | None, process: str) -> dict:
    """One stage's entry: wall time, peak memory, and tokens where the stage generates or trains."""
    entry: dict = {"wall_s": round(wall_s, 2), "peak_rss_mb": peak_rss_mb, "process": process}
    if stage in GENERATING:
        tokens = _tokens(getattr(layout, GENERATING[stage])(it))
        entry |= {"tokens_generated": tokens, "tokens_per_s": _per_s(tokens, wall_s)}
    if stage == "generate" and isinstance(result, dict) and "hint_pass_s" in result:  # the hint pass ran
        entry |= {k: result[k] for k in ("first_pass_s", "hint_pass_s", "hint_prompts", "hint_samples")}
    if stage in TRAINING and isinstance(result, dict):
        tokens = result.get("tokens")
        entry |= {"train_tokens": tokens, "train_tokens_per_s": _per_s(tokens, wall_s),
                  "train_steps": result.get("steps")}
    return entry


def key_figure(layout: Layout, stage: str, it: str, result: dict | None) -> str:
    """The one number a person watching the run wants from a finished stage."""
    result = result if isinstance(result, dict) else {}
    if stage == "prepare":
        return f"prompts {_rows(layout.prompts)}"
    if stage == "generate":
        hinted = (f", hint pass {result['hint_samples']} for {result['hint_prompts']} prompts in "
                  f"{result['hint_pass_s']:.1f} s" if "hint_pass_s" in result else "")
        return f"samples {_rows(layout.samples(it))}{hinted}"
    if stage == "score" and layout.scored(it).is_file():
        n, correct = pl.scan_parquet(layout.scored(it)).select(pl.len(), pl.col("correct").sum()).collect().row(0)
        return f"correct {correct or 0}/{n}"
    if stage == "select":
        return f"selected {_rows(layout.selected(it))}"
    if stage in TRAINING and "train_loss" in result:
        return f"loss {result['train_loss']:.4f}, {result.get('steps')} steps"
    if stage == "reward" and "reward_train_loss" in result:
        return f"loss {result['reward_train_loss']:.4f}"
    if stage in ("evaluate", "baseline") and "pass@1" in result:
        return f"pass@1 {result['pass@1']:.3f}"
    if stage == "calibrate" and layout.choice(it).is_file():
        choice = read_json(layout.choice(it))
        return f"temperature {choice.get('temperature')}, threshold {choice.get('threshold')}"
    if stage == "check" and layout.gate(it).is_file():
        return "gate passed" if read_json(layout.gate(it))["passed"] else "gate failed"
    if stage == "promote" and layout.promotion(it).is_file():
        return "promoted" if read_json(layout.promotion(it))["promoted"] else "held"
    return ""


# ------------------------------------------------------------------ per iteration, in the state folder
def _path(layout: Layout, it: str) -> Path:
    return layout.state_dir / "costs" / f"{it}.json"


def record_stage(layout: Layout, it: str, stage: str, entry: dict) -> None:
    """Keep a stage's entry until the iteration is finished; a re-run stage replaces its entry."""
    path = _path(layout, it)
    costs = read_json(path) if path.is_file() else {}
    costs[stage] = entry
    write_json(path, costs)


def gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def iteration_cost(layout: Layout, it: str, device: str) -> dict | None:
    """The run record's `cost`: each measured stage and the totals, with GPU-hours on a GPU."""
    path = _path(layout, it)
    if not path.is_file():
        return None
    stages = read_json(path)

    def total(key: str) -> int | float | None:
        vals = [s[key] for s in stages.values() if s.get(key) is not None]
        return sum(vals) if vals else None

    wall = round(sum(s["wall_s"] for s in stages.values()), 2)
    generated, trained = total("tokens_generated"), total("train_tokens")
    def busy(key: str) -> float:  # the seconds the stages producing `key` computed (their rates' base)
        return sum(s.get("compute_s", s["wall_s"]) for s in stages.values() if s.get(key) is not None)

    gen_wall, train_wall = busy("tokens_generated"), busy("train_tokens")
    peaks = [s["peak_rss_mb"] for s in stages.values() if s.get("peak_rss_mb") is not None]
    gpus = gpu_count() if device != "cpu" else 0
    return {
        "wall_s": wall,
        "tokens_generated": generated, "tokens_per_s": _per_s(generated, gen_wall),
        "train_tokens": trained, "train_tokens_per_s": _per_s(trained, train_wall),
        "train_steps": total("train_steps"),
        "peak_rss_mb": max(peaks) if peaks else None,
        "device": device,
        "gpus": gpus,
        "gpu_hours": round(wall * gpus / 3600, 4) if gpus else None,
        "stages": stages,
    }


def clear(layout: Layout, it: str) -> None:
    _path(layout, it).unlink(missing_ok=True)
