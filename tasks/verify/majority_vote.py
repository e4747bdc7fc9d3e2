"""Verifier `majority_vote`: pseudo-labels from the samples themselves (as in LMSI), never from gold.

Per prompt (and per sampling pass, when a table holds several temperatures), every sample's final
answer is extracted and put in an equivalence class: the normalised number (arithmetic), or
math-verify's symbolic equality (math). The class with the most votes is the prompt's pseudo-label
when it holds at least `min_agreement` of the prompt's samples; a sample is correct when it is in
that class. Ties go to the class with the lowest sample_idx (then the smaller answer text), so the
vote depends on the samples only, not on the order of the rows.

Gold is read only by `pseudo_label_metrics`, the label-noise monitor: reported, never selected on.
"""

from __future__ import annotations

import polars as pl

from tasks.config.recipe import VoteConfig
from tasks.verify.answers import extract_answer, normalise_number
from tasks.verify.math_verifier import PARSE_TIMEOUT_S, VERIFY_TIMEOUT_S, MathVerifier, run_judge

PASS_COLUMNS = ("temperature", "pass_name")  # samples of one prompt drawn in different passes vote apart
EPS = 1e-9  # votes / K is compared with a decimal share; keep 3/10 >= 0.3 true


def vote_groups(samples: pl.DataFrame) -> list[str]:
    return ["prompt_id", *[c for c in PASS_COLUMNS if c in samples.columns]]


def number_classes(samples: pl.DataFrame) -> pl.DataFrame:
    """Rows with `_row`, `extracted_answer` and `_class`: the normalised number itself."""
    return samples.with_row_index("_row").with_columns(extracted_answer=extract_answer(pl.col("text"))) \
        .with_columns(_class=pl.col("extracted_answer"))


def math_classes(samples: pl.DataFrame, timeouts: tuple[int, int] = (PARSE_TIMEOUT_S, VERIFY_TIMEOUT_S)
                 ) -> pl.DataFrame:
    """Rows with `_row`, `extracted_answer` and `_class`: the group's earliest answer (by sample_idx) that
    math-verify finds equal to this sample's answer. Each distinct text is parsed once per pass."""
    rows = samples.with_row_index("_row")
    groups = vote_groups(samples)
    texts = rows["text"].unique(maintain_order=True)
    extracted, _ = run_judge([], texts.to_list(), [], timeouts)
    text_idx = pl.DataFrame({"text": texts, "_t": pl.int_range(texts.len(), eager=True),
                             "extracted_answer": pl.Series(extracted, dtype=pl.String)})
    rows = rows.join(text_idx, on="text", how="left", maintain_order="left")
    cands = (rows.drop_nulls("extracted_answer").group_by(*groups, "extracted_answer")
             .agg(_first=pl.col("sample_idx").min()))
    golds = cands["extracted_answer"].unique(maintain_order=True).sort()
    gold_idx = pl.DataFrame({"extracted_answer": golds, "_g": pl.int_range(golds.len(), eager=True)})
    cands = cands.join(gold_idx, on="extracted_answer").rename({"extracted_answer": "_cand"})
    pairs = rows.select(*groups, "_row", "_t").join(cands, on=groups)
    distinct = pairs.select("_g", "_t").unique().sort("_g", "_t")
    _, same = run_judge(golds.to_list(), texts.to_list(), [tuple(p) for p in distinct.iter_rows()], timeouts)
    distinct = distinct.with_columns(_same=pl.Series(same, dtype=pl.Boolean))
    first_match = (pairs.join(distinct, on=["_g", "_t"]).filter("_same")
                   .sort("_first", "_cand").group_by("_row").agg(_class=pl.col("_cand").first()))
    return (rows.join(first_match, on="_row", how="left")
            .with_columns(_class=pl.coalesce("_class", "extracted_answer")).sort("_row").drop("_t"))


def vote(rows: pl.DataFrame, groups: list[str], min_agreement: float) -> pl.DataFrame:
    """`rows` (with `_row` and `_class`) plus `correct`: in the group's winning class, when it won enough."""
    n = rows.group_by(groups).agg(_n=pl.len())
    winners = (rows.drop_nulls("_class").group_by(*groups, "_class")
               .agg(_votes=pl.len(), _first=pl.col("sample_idx").min())
               .sort(["_votes", "_first", "_class"], descending=[True, False, False])
               .unique(groups, keep="first", maintain_order=True)
               .join(n, on=groups)
               .filter(pl.col("_votes") / pl.col("_n") >= min_agreement - EPS)
               .select(*groups, _label=pl.col("_class")))
    return (rows.join(winners, on=groups, how="left", maintain_order="left", nulls_equal=True)
            .with_columns(correct=(pl.col("_class") == pl.col("_label")).fill_null(False))
            .sort("_row").drop("_row", "_class", "_label"))


class MajorityVoteVerifier:
    """Correct when the sample agrees with its prompt's majority answer; gold is never read."""

    name = "majority_vote"

    def __init__(self, cfg: VoteConfig | None = None) -> None:
        self.cfg = cfg or VoteConfig()

    @classmethod
    def from_config(cls, config) -> MajorityVoteVerifier:
        return cls(config.vote)

    def verify(self, samples: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
        del prompts  # label-free by construction: not even the gold column is looked at
        rows = number_classes(samples) if self.cfg.extractor == "number" else math_classes(samples)
        return vote(rows, vote_groups(samples), self.cfg.min_agreement)


def gold_matches(winners: pl.DataFrame, gold: pl.DataFrame, cfg: VoteConfig) -> pl.DataFrame:
    """`winners` plus `correct`: its answer equals gold under the vote's own equivalence (the monitor)."""
    if cfg.extractor == "math_verify":
        return MathVerifier().verify(winners, gold)
    g = gold.select("prompt_id", _gold=normalise_number(pl.col("answer")))
    return (winners.join(g, on="prompt_id", how="left", maintain_order="left")
            .with_columns(correct=(extract_answer(pl.col("text")) == pl.col("_gold")).fill_null(False)).drop("_gold"))


def pseudo_label_metrics(scored: pl.DataFrame, prompts: pl.DataFrame, cfg: VoteConfig) -> dict:
    """Coverage and agreement of the vote, and, where prompts have gold, how accurate the pseudo-labels are:
    the share of labelled prompts whose winning answer matches gold (null when none has gold)."""
    per = scored.group_by("prompt_id").agg(_n=pl.len(), _agree=pl.col("correct").sum())
    labelled = per.filter(pl.col("_agree") > 0)
    out = {"n_pseudo_labels": labelled.height,
           "pseudo_label_coverage": round(labelled.height / per.height, 6) if per.height else 0.0,
           "pseudo_label_agreement": round(float((labelled["_agree"] / labelled["_n"]).mean()), 6)
           if labelled.height else 0.0}
    gold = prompts.filter(pl.col("answer").is_not_null()).select("prompt_id", "text", "answer")
    winners = (scored.filter(pl.col("correct")).sort("prompt_id", "sample_idx")
               .unique("prompt_id", keep="first", maintain_order=True)
               .filter(pl.col("prompt_id").is_in(gold["prompt_id"].implode()))
               .select("prompt_id", "sample_idx", "text"))
    checked = gold_matches(winners, gold, cfg) if winners.height else winners
    out["n_pseudo_labels_with_gold"] = checked.height
    out["pseudo_label_accuracy"] = round(float(checked["correct"].mean()), 6) if checked.height else None
    return out
