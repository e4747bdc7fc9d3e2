"""Speed of the unit_tests sandbox on the MBPP fixture: the previous sandbox against the current one.

Each of the fixture's 12 reference solutions is scored `--copies` times (distinct code per copy,
so nothing is deduplicated) by `CodeTestsVerifier` at `--workers` sandboxes at a time; the
baseline runs the same programs (code, then its tests) through the audit-hook sandbox of
`--baseline-rev` (tasks/verify/sandbox/run.py and tasks/verify/sandbox/child.py taken from git), with the same
thread pool. Interleaved repeats, best of `--repeats`. The overhead table times one sample at a
time (median and 90th percentile): a bare interpreter start, the bwrap sandbox around it, and a
whole sample in each sandbox.

    .venv/bin/python bench/sandbox_speed.py [--copies 8 --workers 0 --repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import best_of, print_table  # noqa: E402
from tasks.config.recipe import MBPPSource, SandboxLimits  # noqa: E402
from tasks.data.mbpp import mbpp_prompts  # noqa: E402
from tasks.stages.prepare import _read_prompt_file  # noqa: E402
from tasks.verify.code_verifier import CodeTestsVerifier, parse_tests  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "mbpp" / "mbpp_tiny.jsonl"
BASELINE_REV = "fa65b5b"  # the last commit with the audit-hook sandbox


def load_baseline(rev: str, into: Path):
    """The old tasks/sandbox.py (with its child script beside it) as an importable module."""
    for name in ("sandbox.py", "sandbox_child.py"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:tasks/{name}"], check=True,
                              capture_output=True, text=True).stdout
        # the config models moved into tasks/config/recipe.py when tasks/ was grouped by concern
        (into / name).write_text(text.replace("from tasks.config import", "from tasks.config.recipe import"))
    spec = importlib.util.spec_from_file_location("baseline_sandbox", into / "sandbox.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  (dataclasses look their module up)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def workload(copies: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    src = MBPPSource(path=str(FIXTURE), seed_size=0)
    prompts = mbpp_prompts(_read_prompt_file(src), src)
    raw = pl.read_ndjson(FIXTURE)
    rows = [(pid, i, f"```python\n{code}\n# copy {i}\n```")  # a distinct comment: one sandbox per sample
            for pid, code in zip(prompts["prompt_id"], raw["code"]) for i in range(copies)]
    samples = pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String},
                           orient="row")
    return samples, prompts


def run_baseline(module, samples: pl.DataFrame, prompts: pl.DataFrame, limits: SandboxLimits,
                 workers: int) -> list[str]:
    answers = dict(zip(prompts["prompt_id"], prompts["answer"]))
    programs = [text.split("```python\n", 1)[1].rsplit("```", 1)[0] + "\n\n" + "\n".join(parse_tests(answers[p]))
                + "\n" for p, text in zip(samples["prompt_id"], samples["text"])]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r.status for r in pool.map(lambda prog: module.run_python(prog, limits), programs)]


def latencies_ms(fns: dict[str, Callable[[], object]], n: int) -> dict[str, list[float]]:
    """Wall ms of each call, the variants interleaved so that load on the host hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="0: one per CPU core")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-runs", type=int, default=30)
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    limits = SandboxLimits(workers=workers)
    samples, prompts = workload(args.copies)
    verifier = CodeTestsVerifier(limits)
    from tasks.verify.sandbox.host import bwrap_command, runtime, sandbox_ids
    from tasks.verify.sandbox.run import require_sandbox, run_tests
    from tasks.verify.sandbox.seccomp import program_fd

    require_sandbox()  # one-time set-up (runtime mirror, trial run) stays out of the timings
    with tempfile.TemporaryDirectory() as tmp:
        baseline = load_baseline(args.baseline_rev, Path(tmp))
        times: dict[str, float] = {"baseline": float("inf"), "current": float("inf")}
        verdicts: dict[str, list[str]] = {}
        ratios = []
        for _ in range(args.repeats):  # interleaved, so a noisy neighbour hurts both alike
            old, verdicts["baseline"] = best_of(lambda: run_baseline(baseline, samples, prompts, limits, workers), 1)
            new, out = best_of(lambda: verifier.verify(samples, prompts), 1)
            times["baseline"], times["current"] = min(times["baseline"], old), min(times["current"], new)
            verdicts["current"] = out["extracted_answer"].to_list()
            ratios.append(old / new)

        n = samples.height
        print_table(f"MBPP fixture: {n} samples, {workers} workers, best of {args.repeats}",
                    ["sandbox", "seconds", "samples/s", "passed"],
                    [[name, times[name], n / times[name], f"{verdicts[name].count('passed')}/{n}"]
                     for name in ("baseline", "current")])
        print(f"current / baseline samples/s, median over the {len(ratios)} interleaved pairs: "
              f"{statistics.median(ratios):.2f}")

        ids = sandbox_ids()
        user = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
        interpreter = runtime()[0]

        def bare() -> None:
            subprocess.run([interpreter, "-S", "-s", "-P", "-B", "-c", "pass"], check=True)

        def bwrapped() -> None:
            fd = program_fd()
            try:
                subprocess.run(bwrap_command(limits, fd, ["-s", "-P", "-B", "-c", "pass"]), pass_fds=(fd,),
                               check=True, **user)
            finally:
                os.close(fd)

        tests = parse_tests(prompts["answer"][0])
        first = samples["text"][0].split("```python\n", 1)[1].rsplit("```", 1)[0]
        times = latencies_ms({
            "python -S -c pass": bare,
            "bwrap + seccomp + python -c pass": bwrapped,
            "baseline: one sample (audit hook)": lambda: baseline.run_python(first + "\n" + "\n".join(tests), limits),
            "current: one sample (checked here)": lambda: run_tests(first, tests, limits)}, args.overhead_runs)
        print_table(f"One sample at a time, {args.overhead_runs} runs each (wall ms)", ["what", "median", "p90"],
                    [[name, statistics.median(t), sorted(t)[int(0.9 * (len(t) - 1))]] for name, t in times.items()])
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} cores (other work on the host inflates every figure)")


if __name__ == "__main__":
    main()
