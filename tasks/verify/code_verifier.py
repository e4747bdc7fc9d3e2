"""Verifier `unit_tests`: a code sample is correct when the prompt's unit tests pass in a sandbox.

Tests format: the prompts table's `answer` column holds a JSON list of Python statements (for
MBPP, the task's `test_setup_code`, if any, then its asserts). The sample's code runs in a
sandbox, one per distinct (prompt, code) pair; setup statements run there after it, and each
assert is checked in this process against the values the sandbox returns (tasks/verify/sandbox/run.py).
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import polars as pl

from tasks.config.recipe import SandboxLimits, VerifierConfig
from tasks.verify.sandbox.checks import plan_tests
from tasks.verify.sandbox.host import SandboxUnavailable
from tasks.verify.sandbox.run import SandboxResult, UnsupportedTest, require_sandbox, run_tests

log = logging.getLogger(__name__)

# A fenced block: ```python / ```py / ``` ... ```; an unclosed last fence (a sample cut at
# max_new_tokens) runs to the end of the text.
FENCE = r"```[ \t]*(?:[Pp]ython3?|py)?[ \t]*\r?\n"
CLOSED_BLOCK = FENCE + r"(?s:(.*?))```"
OPEN_BLOCK = FENCE + r"(?s:(.*))$"


def extract_code(text: pl.Expr) -> pl.Expr:
    """The last fenced code block of each sample; else code after an unclosed fence; else the whole text."""
    closed = text.str.extract_all(CLOSED_BLOCK).list.last().str.extract(CLOSED_BLOCK, 1)
    return pl.coalesce(closed, text.str.extract(OPEN_BLOCK, 1), text)


def parse_tests(answer: str | None) -> list[str] | None:
    """The JSON list of test statements, or None when the answer is not one."""
    try:
        tests = json.loads(answer) if answer else None
    except json.JSONDecodeError:
        return None
    if isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests):
        return tests
    return None


class CodeTestsVerifier:
    """Runs each distinct (prompt, code) pair once, `limits.workers` sandboxes at a time.

    `extracted_answer` is the sandbox status: passed, failed, timeout, memory, error or blocked
    (`no_tests` when the prompt's answer is not a JSON list of test statements, `unsupported_tests`
    when a test cannot be checked outside the sample's process; see tasks/verify/sandbox/checks.py).
    Refuses to run anything (SandboxUnavailable) where the host cannot isolate the code."""

    name = "unit_tests"

    def __init__(self, limits: SandboxLimits = SandboxLimits()) -> None:
        self.limits = limits

    @classmethod
    def from_config(cls, config: VerifierConfig) -> CodeTestsVerifier:
        return cls(config.sandbox)

    def _run(self, job: tuple[str, list[str]] | None) -> SandboxResult | None:
        """One sample's verdict. Whatever goes wrong while checking it (a reply this process cannot
        read, a check that fails to evaluate) is that sample's `error`, never the batch's; only a
        host that cannot isolate code (SandboxUnavailable) stops the batch."""
        if job is None:
            return None
        try:
            return run_tests(*job, self.limits)
        except SandboxUnavailable:
            raise
        except UnsupportedTest as exc:  # planned once already; kept for callers that skip the planning
            return SandboxResult("error", 0.0, f"unsupported tests: {str(exc)[:200]}")
        except Exception as exc:  # noqa: BLE001 - one sample's failure stays that sample's
            log.warning("sample graded error: the verifier failed while checking it (%s: %s)",
                        type(exc).__name__, str(exc)[:200])
            return SandboxResult("error", 0.0, f"verifier: {type(exc).__name__} while checking the sample")

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        pairs = (samples.select("prompt_id", extract_code(pl.col("text")).alias("_code"))
                 .unique(maintain_order=True)
                 .join(prompts.select("prompt_id", "answer"), on="prompt_id", how="left", maintain_order="left"))
        checkable = _checkable_tests(pairs.select("prompt_id", "answer").unique("prompt_id", maintain_order=True))
        # One sandbox per pair: the per-row loop is the unit of work, not table logic.
        jobs = [(code, tests) if (tests := checkable.get(pid)) else None
                for pid, code in zip(pairs["prompt_id"], pairs["_code"])]
        if any(jobs):
            require_sandbox()  # fail closed before the first sample runs
        workers = min(self.limits.workers or os.cpu_count() or 1, max(len(jobs), 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:  # each thread waits on one sandbox
            results = list(pool.map(self._run, jobs))
        labels = [r.status if r else "no_tests" if checkable.get(pid, ()) is None else "unsupported_tests"
                  for pid, r in zip(pairs["prompt_id"], results)]
        statuses = pairs.select("prompt_id", "_code").with_columns(_status=pl.Series(labels, dtype=pl.String))
        out = (samples.with_columns(extract_code(pl.col("text")).alias("_code"))
               .join(statuses, on=["prompt_id", "_code"], how="left", maintain_order="left", nulls_equal=True))
        return out.with_columns(correct=pl.col("_status") == "passed",
                                extracted_answer=pl.col("_status")).drop("_code", "_status")


def _checkable_tests(prompts: pl.DataFrame) -> dict[str, list[str] | None]:
    """{prompt_id: tests}; None where the answer is no test list; absent where a test cannot be
    checked outside the sample's process (a warning names it: such a prompt can never pass)."""
    checkable: dict[str, list[str] | None] = {}
    for pid, answer in zip(prompts["prompt_id"], prompts["answer"]):
        tests = parse_tests(answer)
        try:
            if tests is not None:
                plan_tests(tests)
        except UnsupportedTest as exc:
            log.warning("prompt %s can never pass: %s", pid, exc)
            continue
        checkable[pid] = tests
    return checkable
