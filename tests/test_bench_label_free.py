"""bench/label_free_comparison.py: the vote-precision table, from a label-free arm's scored tables and the
prompts' gold, on a synthesized workspace (the whole bench runs for hours; its arms are the shipped presets)."""

from __future__ import annotations

import polars as pl

from bench.label_free_comparison import vote_precision
from tasks.workspace.layout import Layout


def _scored(it: str, votes: dict[str, list[tuple[str, bool]]]) -> pl.DataFrame:
    return pl.DataFrame([{"prompt_id": p, "sample_idx": i, "iteration": it, "extracted_answer": a, "correct": c}
                         for p, rows in votes.items() for i, (a, c) in enumerate(rows)])


def test_vote_precision_counts_labels_and_their_accuracy_by_vote_share(tmp_path):
    layout = Layout(tmp_path)
    layout.prompts.parent.mkdir(parents=True)
    pl.DataFrame({"prompt_id": ["a", "b", "c", "d"], "answer": ["3", "5", "7", None]}).write_parquet(layout.prompts)
    layout.scored("0001").parent.mkdir(parents=True)
    _scored("0001", {
        "a": [("3", True)] * 4,                                    # unanimous, right
        "b": [("6", True)] * 3 + [("5", False)],                   # 3 of 4 agree on a wrong answer
        "c": [("7", True)] * 2 + [("1", False), ("2", False)],     # half the votes, right
        "d": [("9", False), ("8", False), ("4", False), ("2", False)],  # no label (below min_agreement)
    }).write_parquet(layout.scored("0001"))
    rows = {r[1]: r[2:] for r in vote_precision(layout, 2)}  # iteration 2 has no table: skipped
    assert rows["0.500"] == ["75.0", "66.7"]   # a, b, c labelled; a and c right
    assert rows["0.750"] == ["50.0", "50.0"]   # a and b
    assert rows["1.000"] == ["25.0", "100.0"]  # a only
    assert len(vote_precision(layout, 2)) == 5
