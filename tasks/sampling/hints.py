"""The hint pass: which pool prompts get a second, hinted sampling pass, and the hinted requests.

After the first pass, prompts with fewer than `hints.min_correct` correct samples are sampled again
with a hint (Zelikman et al.'s STaR rationalization; GSI's partial solutions and Socratic questions,
"Tail Narrowing"). Each prompt gets the first kind in `hints.kinds` its data allows:

- answer (origin `rationalized`): the gold answer in the user turn;
- partial (origin `hinted`): the first steps of the solution, either as the start of the assistant turn
  (prefill: the sample's text is those steps plus the model's continuation, a chain that is checked as
  a whole) or in the user turn;
- socratic (origin `hinted`): a sub-question from the recipe appended to the problem.

Templates are filled by plain replacement, never `str.format`, so braces in a problem are safe.
"""

from __future__ import annotations

import polars as pl

from tasks.config.allocation import HINT_IDX_BASE
from tasks.config.sampling import HintsConfig
from tasks.data.arith import solution_chains

ORIGIN_OF_KIND = {"answer": "rationalized", "partial": "hinted", "socratic": "hinted"}

TARGETS_SCHEMA = {"prompt_id": pl.String, "n_first": pl.Int64, "c_first": pl.Int64, "hint_kind": pl.String,
                  "origin": pl.String, "hint_reason": pl.String, "text": pl.String, "prefix": pl.String,
                  "hint": pl.String}


def revealed_steps(steps: pl.Expr, share: float) -> pl.Expr:
    """How many of `steps` a partial solution reveals: ceil(share * steps), at least one and never all;
    null when the chain is too short to give only part of it away."""
    n = (steps.cast(pl.Float64) * share).ceil().cast(pl.Int64).clip(1, None)
    return pl.when(steps >= 2).then(pl.min_horizontal(n, steps - 1))


def partial_solutions(solutions: pl.Series, share: float) -> pl.Series:
    """The first revealed sentences of worked solutions whose last sentence is the conclusion
    (" 23+17=40. 40-9=31. Answer: 31" -> " 23+17=40."); null where there is none or it is too short."""
    pieces = solutions.cast(pl.String).str.split(". ")
    frame = pl.DataFrame({"_p": pieces}).with_columns(_reveal=revealed_steps(pl.col("_p").list.len() - 1, share))
    return frame.select(pl.when(pl.col("_reveal").is_not_null())
                        .then(pl.col("_p").list.head(pl.col("_reveal")).list.join(". ") + ".")
                        .alias("partial"))["partial"]


def _partials(pool: pl.DataFrame, cfg: HintsConfig) -> pl.Series:
    if cfg.partial.source == "arith":  # the chain is a function of the question in the generator's grammar
        solutions = solution_chains(pool["text"])
    else:
        solutions = pool["target"] if "target" in pool.columns else pl.Series([None] * pool.height, dtype=pl.String)
    return partial_solutions(solutions, cfg.partial.share)


def hint_targets(first_pass: pl.DataFrame, pool: pl.DataFrame, cfg: HintsConfig,
                 max_samples: int | None = None) -> pl.DataFrame:
    """The hinted requests (TARGETS_SCHEMA), sorted by prompt_id.

    `first_pass`: the first pass's verified samples (prompt_id, correct); `pool`: the iteration's prompts
    (prompt_id, text, answer, and target for partial source `target`). Prompts with fewer than
    `min_correct` correct samples qualify; the fewest correct go first (then prompt_id) when `max_prompts`
    or `max_samples` (a sample budget for the pass, `k` per prompt) cuts the list. `text` is the user
    turn, `prefix` the start of the assistant turn (prefill), `hint` what was added."""
    counts = first_pass.group_by("prompt_id").agg(n_first=pl.len().cast(pl.Int64),
                                                  c_first=pl.col("correct").fill_null(False).sum().cast(pl.Int64))
    answer = pool["answer"] if "answer" in pool.columns else pl.Series([None] * pool.height, dtype=pl.String)
    cand = (pool.select("prompt_id", "text").with_columns(answer=answer.cast(pl.String),
                                                          partial=_partials(pool, cfg))
            .join(counts, on="prompt_id", how="left")
            .with_columns(pl.col("n_first", "c_first").fill_null(0))
            .filter(pl.col("c_first") < cfg.min_correct))
    available = {"answer": pl.col("answer").is_not_null() & (pl.col("answer").str.strip_chars() != ""),
                 "partial": pl.col("partial").is_not_null(), "socratic": pl.lit(True)}
    kind = pl.coalesce([pl.when(available[k]).then(pl.lit(k)) for k in cfg.kinds])
    cand = cand.with_columns(hint_kind=kind).filter(pl.col("hint_kind").is_not_null()).sort(["c_first", "prompt_id"])
    most = [n for n in (cfg.max_prompts, None if max_samples is None else max_samples // cfg.k) if n is not None]
    if most:
        cand = cand.head(min(most))
    return render_hints(cand, cfg).sort("prompt_id")


def render_hints(cand: pl.DataFrame, cfg: HintsConfig) -> pl.DataFrame:
    """Per candidate (prompt_id, text, answer, partial, hint_kind, n_first, c_first): its user turn, prefix
    and hint, by the kind's template."""
    q, a, p = pl.col("text"), pl.col("answer"), pl.col("partial")
    prefill = cfg.partial.placement == "prefill"

    def filled(template: str) -> pl.Expr:
        out = pl.repeat(pl.lit(template, dtype=pl.String), pl.len())  # a column: replace_all takes per-row values
        for name, value in (("answer", a), ("partial", p), ("question", q)):  # the question last: its braces stay
            out = out.str.replace_all("{" + name + "}", value.fill_null(""), literal=True)
        return out

    def hint_of(template: str) -> pl.Expr:  # the template without the question: what the hint adds
        return filled(template.replace("{question}", "")).str.strip_chars()

    kind = pl.col("hint_kind")
    socratic = cfg.socratic.template or "{question}"
    user = (pl.when(kind == "answer").then(filled(cfg.answer.template))
            .when(kind == "socratic").then(filled(socratic))
            .when(prefill).then(q).otherwise(filled(cfg.partial.template)))
    hint = (pl.when(kind == "answer").then(hint_of(cfg.answer.template))
            .when(kind == "socratic").then(hint_of(socratic))
            .when(prefill).then(p).otherwise(hint_of(cfg.partial.template)))
    prefix = pl.when((kind == "partial") & prefill).then(p)
    reason = pl.format("{} correct of {} < m={}", "c_first", "n_first", pl.lit(cfg.min_correct))
    origin = kind.replace_strict(ORIGIN_OF_KIND, return_dtype=pl.String)
    out = cand.select(
        "prompt_id", "n_first", "c_first", "hint_kind", origin.alias("origin"), reason.alias("hint_reason"),
        user.alias("text"), prefix.alias("prefix"), hint.alias("hint"))
    return out.cast(TARGETS_SCHEMA) if out.height else pl.DataFrame(schema=TARGETS_SCHEMA)


def mark_hinted(samples: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """The hint pass's samples with their origin, hint kind and hint, and sample_idx moved to
    HINT_IDX_BASE + j, so they never collide with first-pass samples of the same prompt."""
    return samples.join(targets.select("prompt_id", "origin", "hint_kind", "hint"), on="prompt_id", how="left") \
        .with_columns(sample_idx=(pl.col("sample_idx") + HINT_IDX_BASE).cast(pl.Int32))


def mark_self(samples: pl.DataFrame) -> pl.DataFrame:
    """First-pass samples when the hint pass is on: origin self, no hint."""
    return samples.with_columns(origin=pl.lit("self"), hint_kind=pl.lit(None, pl.String),
                                hint=pl.lit(None, pl.String))
