"""Verifier `math_verify`: final answers of math samples checked with Hugging Face's math-verify.

math-verify extracts the answer (`\\boxed{}`, "The final answer is", "#### 42", "Answer: 42", the
last number) and compares it symbolically with the gold answer (`1/2` = `0.5` = `\\frac{1}{2}`).
It is per-pair Python, so each distinct gold and each distinct sample text is parsed once and
only the distinct (gold, text) pairs are compared; the join back to the rows is Polars.

math-verify bounds each parse and comparison with a SIGALRM timeout, which only works in a
process's main thread; elsewhere (a Dask or thread-pool worker) the same work runs in a child
process. A sample that times out, or that math-verify cannot handle, is just incorrect.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl

PARSE_TIMEOUT_S = 3  # per extraction (math-verify takes whole seconds)
VERIFY_TIMEOUT_S = 3  # per comparison
MAX_TEXT_CHARS = 4000  # the final answer sits at the end; the tail bounds regex and parse cost
MAX_ANSWER_CHARS = 200  # extracted_answer is stored, so keep it short


def _parse(text: str, timeout_s: int) -> list:
    from math_verify import parse
    from math_verify.errors import TimeoutException

    try:
        return parse(text, parsing_timeout=timeout_s)
    except (Exception, TimeoutException):  # math-verify's timeout is a BaseException
        return []


def _answer_text(parsed: list) -> str | None:
    """The matched answer string math-verify keeps beside the sympy value (never str() of sympy,
    which can hang on huge expressions)."""
    strings = [p for p in parsed if isinstance(p, str) and p.strip()]
    return strings[-1].strip()[:MAX_ANSWER_CHARS] if strings else None


def judge(golds: list[str], texts: list[str], pairs: list[tuple[int, int]],
          timeout_s: tuple[int, int] = (PARSE_TIMEOUT_S, VERIFY_TIMEOUT_S)) -> tuple[list[str | None], list[bool]]:
    """Extracted answer per text, and correctness per (gold index, text index) pair.

    Golds are wrapped in `\\boxed{}` so plain ("72") and LaTeX ("\\frac{1}{2}") golds parse alike."""
    from math_verify import verify
    from math_verify.errors import TimeoutException

    parse_s, verify_s = timeout_s
    gold_parsed = [_parse(f"\\boxed{{{g}}}", parse_s) for g in golds]
    text_parsed = [_parse(t[-MAX_TEXT_CHARS:], parse_s) for t in texts]
    correct = []
    for g, t in pairs:
        try:
            ok = bool(gold_parsed[g] and text_parsed[t] and verify(gold_parsed[g], text_parsed[t],
                                                                  timeout_seconds=verify_s))
        except (Exception, TimeoutException):
            ok = False
        correct.append(ok)
    return [_answer_text(p) for p in text_parsed], correct


def judge_in_child(golds: list[str], texts: list[str], pairs: list[tuple[int, int]],
                   timeout_s: tuple[int, int] = (PARSE_TIMEOUT_S, VERIFY_TIMEOUT_S)) -> tuple[list, list[bool]]:
    """`judge` in a fresh Python process, where it runs in the main thread and its timeouts work."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    job = json.dumps({"golds": golds, "texts": texts, "pairs": pairs, "timeout_s": timeout_s})
    proc = subprocess.run([sys.executable, "-m", "tasks.verify.math_verifier"], input=job, capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"math-verify child process failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout)
    return out["extracted"], out["correct"]


def run_judge(golds: list[str], texts: list[str], pairs: list[tuple[int, int]],
              timeout_s: tuple[int, int] = (PARSE_TIMEOUT_S, VERIFY_TIMEOUT_S)) -> tuple[list, list[bool]]:
    """`judge` here in the main thread, else in a child process (where its timeouts work)."""
    run = judge if threading.current_thread() is threading.main_thread() else judge_in_child
    return run(golds, texts, pairs, timeout_s)


class MathVerifier:
    """Correct when math-verify finds the sample's final answer equivalent to the gold answer."""

    name = "math_verify"

    def __init__(self, parse_timeout_s: int = PARSE_TIMEOUT_S, verify_timeout_s: int = VERIFY_TIMEOUT_S) -> None:
        self.timeouts = (parse_timeout_s, verify_timeout_s)

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        rows = samples.with_row_index("_row").join(
            prompts.select("prompt_id", pl.col("answer").cast(pl.String).alias("_gold")),
            on="prompt_id", how="left", maintain_order="left")
        golds = rows["_gold"].drop_nulls().unique(maintain_order=True)
        texts = rows["text"].unique(maintain_order=True)
        gold_idx = pl.DataFrame({"_gold": golds, "_g": pl.int_range(golds.len(), eager=True)})
        text_idx = pl.DataFrame({"text": texts, "_t": pl.int_range(texts.len(), eager=True)})
        pairs = (rows.drop_nulls("_gold").select("_gold", "text").unique(maintain_order=True)
                 .join(gold_idx, on="_gold", maintain_order="left")
                 .join(text_idx, on="text", maintain_order="left"))
        args = (golds.to_list(), texts.to_list(), [tuple(p) for p in pairs.select("_g", "_t").iter_rows()])
        extracted, correct = run_judge(*args, self.timeouts)
        text_idx = text_idx.with_columns(extracted_answer=pl.Series(extracted, dtype=pl.String))
        pairs = pairs.with_columns(correct=pl.Series(correct, dtype=pl.Boolean)).select("_gold", "text", "correct")
        return (rows.join(text_idx.drop("_t"), on="text", how="left", maintain_order="left")
                .join(pairs, on=["_gold", "text"], how="left", maintain_order="left")
                .with_columns(pl.col("correct").fill_null(False))
                .sort("_row").drop("_row", "_gold"))


if __name__ == "__main__":  # the child side of judge_in_child: JSON in, JSON out
    job = json.loads(sys.stdin.read())
    ext, ok = judge(job["golds"], job["texts"], [tuple(p) for p in job["pairs"]], tuple(job["timeout_s"]))
    sys.stdout.write(json.dumps({"extracted": ext, "correct": ok}))
