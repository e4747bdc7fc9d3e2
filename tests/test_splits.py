"""tasks/data/splits.py: carving seed, probe and test by prompt hash; stable as rows are added."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.data.schema import stable_ids
from tasks.data.splits import assignment_hash, carve, positions
from tasks.errors import InputDataError


def frame(n: int, start: int = 0, labelled_every: int = 1) -> pl.DataFrame:
    texts = pl.Series([f"Problem {i}: what is {i} plus {i}?" for i in range(start, start + n)])
    df = pl.DataFrame({"text": texts}).with_columns(stable_ids(texts))
    return df.with_columns(
        target=pl.when(pl.int_range(start, start + n) % labelled_every == 0).then(pl.lit("worked")),
        split=pl.lit(None, pl.String))


def assigned(df: pl.DataFrame) -> dict[str, str]:
    return dict(df.select("prompt_id", "split").iter_rows())


def test_shares_are_close_to_asked_and_the_rest_is_train():
    out = carve(frame(4000), {"test": 0.2, "probe": 0.05, "seed": 0.1}, 0, file="f")
    share = {s: n / 4000 for s, n in out.group_by("split").len().iter_rows()}
    assert share["test"] == pytest.approx(0.2, abs=0.02)
    assert share["probe"] == pytest.approx(0.05, abs=0.015)
    assert share["seed"] == pytest.approx(0.1, abs=0.015)
    assert share["train"] == pytest.approx(0.65, abs=0.025)
    assert out.height == 4000 and out["split"].null_count() == 0


def test_counts_are_exact():
    out = carve(frame(300), {"test": 0.2, "probe": 24, "seed": 40}, 0, file="f")
    sizes = dict(out.group_by("split").len().iter_rows())
    assert sizes["probe"] == 24 and sizes["seed"] == 40


def test_same_seed_same_carve_other_seed_other_carve():
    spec = {"test": 0.25, "probe": 10, "seed": 0.2}
    a, b = carve(frame(500), spec, 0, file="f"), carve(frame(500), spec, 0, file="f")
    assert assigned(a) == assigned(b)
    assert assigned(carve(frame(500), spec, 1, file="f")) != assigned(a)


def test_depends_on_the_normalised_text_not_the_row_order():
    df = frame(400)
    spec = {"test": 0.3, "seed": 0.3}
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=3)
    assert assigned(carve(shuffled, spec, 0, file="f")) == assigned(carve(df, spec, 0, file="f"))
    same = pl.Series(["Mia has 3 pens.", "  MIA has 3   pens. "])
    ids = stable_ids(same)
    assert ids[0] == ids[1] and positions(ids, 0)[0] == positions(ids, 0)[1]


@pytest.mark.parametrize("added", [1, 10, 500, 3000])
def test_adding_rows_never_moves_a_prompt_under_shares(added):
    spec = {"test": 0.2, "probe": 0.05, "seed": 0.1}
    before = assigned(carve(frame(1000), spec, 7, file="f"))
    grown = pl.concat([frame(added, start=1000), frame(1000)])  # new rows first: order must not matter
    after = assigned(carve(grown, spec, 7, file="f"))
    assert {p: after[p] for p in before} == before


@pytest.mark.parametrize("added", [1, 25, 400])
def test_adding_rows_under_counts_keeps_test_and_never_takes_from_train(added):
    spec = {"test": 0.2, "probe": 30, "seed": 50}
    before = assigned(carve(frame(600), spec, 3, file="f"))
    after = assigned(carve(pl.concat([frame(600), frame(added, start=600)]), spec, 3, file="f"))
    order = {"test": 0, "probe": 1, "seed": 2, "train": 3}
    for p, split in before.items():
        assert (split == "test") == (after[p] == "test")  # a share: in or out of test for good
        assert order[after[p]] >= order[split], (p, split, after[p])  # only ever on to a later split
    moved = sum(after[p] != s for p, s in before.items())
    assert moved <= 2 * added  # each added row displaces at most one prompt per counted split


def test_seed_is_carved_only_from_rows_with_a_target():
    out = carve(frame(900, labelled_every=3), {"test": 0.2, "seed": 0.3}, 0, file="f")
    seed = out.filter(pl.col("split") == "seed")
    assert seed.height > 0 and seed["target"].null_count() == 0
    counted = carve(frame(900, labelled_every=3), {"test": 0.2, "seed": 40}, 0, file="f")
    assert counted.filter(pl.col("split") == "seed")["target"].null_count() == 0


def test_rows_with_a_split_keep_it():
    df = frame(200).with_columns(split=pl.when(pl.int_range(200) < 50).then(pl.lit("test")))
    out = carve(df, {"seed": 0.2, "probe": 10}, 0, file="f")
    assert out.head(50)["split"].to_list() == ["test"] * 50
    assert set(out.tail(150)["split"]) == {"seed", "probe", "train"}


def test_a_count_larger_than_the_rows_left_is_one_line():
    with pytest.raises(InputDataError) as exc:
        carve(frame(50), {"test": 0.5, "probe": 40}, 0, file="data/p.jsonl")
    msg = str(exc.value)
    assert "\n" not in msg and "data/p.jsonl" in msg and "prompts.source.splits.probe" in msg
    assert "asks for 40" in msg and "Fix:" in msg


def test_assignment_hash_is_order_free_and_sees_every_move():
    out = carve(frame(300), {"test": 0.2, "seed": 0.1}, 0, file="f")
    h = assignment_hash(out)
    assert assignment_hash(out.reverse()) == h and len(h) == 64
    moved = out.with_columns(split=pl.when(pl.int_range(300) == 5).then(pl.lit("probe")).otherwise("split"))
    assert assignment_hash(moved) != h


def test_lineage_records_the_split_assignment_hash(micro_workspace):
    from tasks.audit.lineage import iteration_lineage
    from tasks.workspace.layout import Layout

    art = iteration_lineage(micro_workspace, 1)["artifacts"]["data/prompts/prompts.parquet"]
    assert art["split_sha256"] == assignment_hash(pl.read_parquet(Layout(micro_workspace).prompts))
