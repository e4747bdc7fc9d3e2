"""tasks/prepare.py: building, ingesting and leak-checking the prompts table."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tasks.config import ArithSource, FileSource
from tasks.errors import InputDataError
from tasks.prepare import build_arith_prompts, check_no_leakage, ingest_prompt_file
from tasks.schema import PROMPTS, SPLITS, conform, stable_ids

SMALL = ArithSource(seed_size=10, seed_mix=[0.45, 0.40, 0.10, 0.05], train_size_per_steps=7, probe_size=6,
                    test_size=9, max_steps=4)


@pytest.fixture(scope="module")
def arith_prompts() -> pl.DataFrame:
    return build_arith_prompts(SMALL, run_seed=0)


# ---------------------------------------------------------------- build_arith_prompts
def test_splits_are_disjoint_by_prompt_id(arith_prompts):
    assert arith_prompts["prompt_id"].is_unique().all()
    ids = {s: set(arith_prompts.filter(pl.col("split") == s)["prompt_id"]) for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not ids[a] & ids[b], (a, b)


def test_split_sizes_as_configured(arith_prompts):
    sizes = dict(arith_prompts.group_by("split").len().iter_rows())
    assert sizes == {"test": 9, "probe": 6, "seed": 10, "train": 7 * 4}
    per = {(s, d): n for s, d, n in arith_prompts.group_by("split", "difficulty").len().iter_rows()}
    assert [per.get(("train", d)) for d in (1, 2, 3, 4)] == [7, 7, 7, 7]
    assert [per.get(("test", d)) for d in (1, 2, 3, 4)] == [3, 2, 2, 2]  # remainder to the easy end
    assert [per.get(("probe", d)) for d in (1, 2, 3, 4)] == [2, 2, 1, 1]


@pytest.mark.parametrize("seed_size, mix", [(1000, [0.45, 0.40, 0.10, 0.05]), (10, [0.45, 0.40, 0.10, 0.05]),
                                            (7, [0.25, 0.25, 0.25, 0.25]), (3, [1 / 3, 1 / 3, 1 / 3, 0.0])])
def test_seed_split_sums_to_seed_size(seed_size, mix):
    src = ArithSource(seed_size=seed_size, seed_mix=mix, train_size_per_steps=1, probe_size=1, test_size=1)
    df = build_arith_prompts(src, run_seed=1)
    seed = df.filter(pl.col("split") == "seed")
    assert seed.height == seed_size
    counts = dict(seed.group_by("difficulty").len().iter_rows())
    for steps, share in zip((1, 2, 3, 4), mix):
        assert abs(counts.get(steps, 0) - seed_size * share) < 1  # each level within rounding


def test_only_seed_split_has_target(arith_prompts):
    seed = arith_prompts.filter(pl.col("split") == "seed")
    rest = arith_prompts.filter(pl.col("split") != "seed")
    assert seed["target"].null_count() == 0
    assert rest["target"].null_count() == rest.height
    assert all(t.endswith(f"Answer: {a}") for t, a in seed.select("target", "answer").iter_rows())
    assert arith_prompts["answer"].null_count() == 0  # gold answers everywhere, for evaluation


def test_arith_prompts_conform_and_are_deterministic(arith_prompts):
    out = conform(arith_prompts, PROMPTS)
    assert out.height == arith_prompts.height
    assert set(out["source"]) == {"arith"}
    again = build_arith_prompts(SMALL, run_seed=0)
    assert conform(again, PROMPTS).equals(out)
    other = build_arith_prompts(SMALL, run_seed=1)
    assert set(other["prompt_id"]) != set(arith_prompts["prompt_id"])


def test_arith_prompts_pass_leakage_check(arith_prompts):
    check_no_leakage(arith_prompts)


# ---------------------------------------------------------------- check_no_leakage
def leak_frame(test_text: str, train_text: str) -> pl.DataFrame:
    df = pl.DataFrame({"text": [test_text, train_text, "Something else entirely?"],
                       "split": ["test", "train", "seed"]})
    return df.with_columns(stable_ids(df["text"]))


@pytest.mark.parametrize("train_text", ["Mia has 3 pens. How many?", "  mia HAS 3 pens.\tHow   many?\n"])
def test_leakage_detected_even_with_case_and_whitespace_changes(train_text):
    df = leak_frame("Mia has 3 pens. How many?", train_text)
    with pytest.raises(InputDataError) as exc:
        check_no_leakage(df, source="data/my.jsonl")
    msg = str(exc.value)
    assert "1 test prompt(s)" in msg and "data/my.jsonl" in msg and "split" in msg and "Fix:" in msg
    assert "\n" not in msg


def test_no_leakage_for_different_prompts():
    check_no_leakage(leak_frame("Mia has 3 pens. How many?", "Mia has 4 pens. How many?"))


# ---------------------------------------------------------------- ingest_prompt_file
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"question": "Mia has 3 pens. How many?", "split": "seed", "gold": 3, "level": 1},
    {"question": "Tom has 5 coins. Then gets 2 more. How many?", "split": "train", "gold": 7, "level": 2},
    {"question": "Ava has 9 cards. Then loses 4. How many?", "split": "test", "gold": 5, "level": 2},
    {"question": "Zoe has 1 bead. How many? é", "split": "probe", "gold": 1, "level": 1},
]


def src_for(path: Path, **kw) -> FileSource:
    opts = dict(text_column="question", answer_column="gold", difficulty_column="level")
    opts.update(kw)
    return FileSource(path=str(path), **opts)


def assert_one_line_error(exc: pytest.ExceptionInfo, path: Path, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert "Fix:" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_ingest_valid_file(tmp_path, fmt):
    path = tmp_path / f"prompts.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    else:
        pl.DataFrame(ROWS).write_parquet(path)
    df = ingest_prompt_file(src_for(path))
    out = conform(df, PROMPTS)
    assert out.height == 4
    got = {r["text"]: r for r in out.iter_rows(named=True)}
    assert got["Tom has 5 coins. Then gets 2 more. How many?"]["answer"] == "7"
    assert got["Tom has 5 coins. Then gets 2 more. How many?"]["difficulty"] == 2
    assert got["Zoe has 1 bead. How many? é"]["split"] == "probe"
    assert set(out["source"]) == {f"file:prompts.{fmt}"}
    assert out["target"].null_count() == 4
    assert out["prompt_id"].to_list() == stable_ids(out["text"]).to_list()


def test_ingest_without_optional_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": r["question"], "split": r["split"]} for r in ROWS])
    df = ingest_prompt_file(FileSource(path=str(path), answer_column=None))
    out = conform(df, PROMPTS)
    assert out["answer"].null_count() == 4
    assert out["difficulty"].null_count() == 4


def test_ingest_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": r["question"], "gold": r["gold"]} for r in ROWS])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path, difficulty_column=None))
    assert_one_line_error(exc, path, "missing column(s) ['split']", "prompts.source", "_column option")


def test_ingest_missing_answer_column_by_default(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": r["question"], "split": r["split"]} for r in ROWS])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(FileSource(path=str(path)))
    assert_one_line_error(exc, path, "['answer']")


def test_ingest_empty_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "empty")


def test_ingest_zero_rows(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame(ROWS).head(0).write_parquet(path)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "no rows")


def test_ingest_duplicate_prompts(tmp_path):
    rows = [*ROWS, {**ROWS[1], "question": "  TOM has 5 coins.  Then gets 2 more. How many?", "split": "seed"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "2 rows repeat a prompt", "question", "duplicate")


def test_ingest_unknown_split(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [*ROWS, {**ROWS[0], "question": "New?", "split": "validation"}])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "'validation'", "split", "seed")


def test_ingest_non_utf8_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes('{"question": "Caf\u00e9 has 3 pens?", "split": "seed", "gold": 3, "level": 1}\n'
                     .encode("latin-1"))
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "UTF-8")


def test_ingest_malformed_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "a", "split": \n', encoding="utf-8")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "cannot be read")


def test_ingest_non_text_prompts(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{**r, "question": i} for i, r in enumerate(ROWS)])
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "must hold text")


def test_ingest_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "p.jsonl"
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "file not found", "prompts.source.path")


def test_ingest_unsupported_suffix(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("question,split\na,seed\n")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(src_for(path))
    assert_one_line_error(exc, path, "'.csv'")


def test_number_ranges_reach_the_generator():
    src = ArithSource(seed_size=4, train_size_per_steps=20, probe_size=1, test_size=1, max_steps=1,
                      seed_mix=[1.0], max_start=5000, max_operand=3000)
    df = build_arith_prompts(src, run_seed=0)
    starts = df["text"].str.extract(r" has (\d+) ", 1).cast(pl.Int64)
    assert starts.max() > 20 and starts.max() <= 5000
    small = build_arith_prompts(src.model_copy(update={"max_start": 3, "max_operand": 2}), run_seed=0)
    assert small["text"].str.extract(r" has (\d+) ", 1).cast(pl.Int64).max() <= 3
