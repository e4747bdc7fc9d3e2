"""Verifier `unit_tests`: a code sample is correct when the prompt's unit tests pass in a sandbox.

Tests format: the prompts table's `answer` column holds a JSON list of Python statements (for
MBPP, the task's `test_setup_code`, if any, then its asserts). They run in order after the
sample's code, in one sandboxed process per distinct (prompt, code) pair; see tasks/sandbox.py.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import polars as pl

from tasks.config import SandboxLimits, VerifierConfig
from tasks.sandbox import SandboxResult, run_python

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


def build_program(code: str, tests: list[str]) -> str:
    return f"{code}\n\n" + "\n".join(tests) + "\n"


class CodeTestsVerifier:
    """Runs each distinct (prompt, code) pair once, `limits.workers` sandboxes at a time.

    `extracted_answer` is the sandbox status: passed, failed, timeout, memory, error or blocked
    (`no_tests` when the prompt's answer is not a JSON list of test statements)."""

    name = "unit_tests"

    def __init__(self, limits: SandboxLimits = SandboxLimits()) -> None:
        self.limits = limits

    @classmethod
    def from_config(cls, config: VerifierConfig) -> CodeTestsVerifier:
        return cls(config.sandbox)

    def _run(self, program: str | None) -> SandboxResult | None:
        return run_python(program, self.limits) if program is not None else None

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        pairs = (samples.select("prompt_id", extract_code(pl.col("text")).alias("_code"))
                 .unique(maintain_order=True)
                 .join(prompts.select("prompt_id", "answer"), on="prompt_id", how="left", maintain_order="left"))
        # One sandbox process per pair: the per-row loop is the unit of work, not table logic.
        programs = [build_program(code, tests) if (tests := parse_tests(answer)) else None
                    for code, answer in zip(pairs["_code"], pairs["answer"])]
        workers = min(self.limits.workers or os.cpu_count() or 1, max(len(programs), 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:  # each thread waits on one child process
            results = list(pool.map(self._run, programs))
        statuses = pairs.select("prompt_id", "_code").with_columns(
            _status=pl.Series([r.status if r else "no_tests" for r in results], dtype=pl.String))
        out = (samples.with_columns(extract_code(pl.col("text")).alias("_code"))
               .join(statuses, on=["prompt_id", "_code"], how="left", maintain_order="left", nulls_equal=True))
        return out.with_columns(correct=pl.col("_status") == "passed",
                                extracted_answer=pl.col("_status")).drop("_code", "_status")
