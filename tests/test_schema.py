"""tasks/data/schema.py: conform, deterministic writes, stable prompt ids."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from tasks.data.schema import PROMPTS, SELECTED, TABLES, conform, read_table, stable_ids, write_table
from tasks.errors import InputDataError


def prompts_rows(n: int = 6) -> pl.DataFrame:
    texts = [f"Question number {i}?" for i in range(n)]
    return pl.DataFrame({
        "prompt_id": stable_ids(pl.Series(texts)),
        "text": texts,
        "answer": [str(i) if i % 2 else None for i in range(n)],
        "split": ["train", "test", "seed"] * (n // 3),
        "source": ["arith"] * n,
        "difficulty": [i % 4 + 1 for i in range(n)],  # Int64: conform casts it
        "target": [None] * n,
    })


def test_conform_selects_casts_and_sorts():
    df = prompts_rows().with_columns(extra=pl.lit(1))
    out = conform(df, PROMPTS)
    assert out.schema == PROMPTS.schema  # extra column dropped, difficulty cast to Int32
    assert out.select("split", "prompt_id").rows() == sorted(df.select("split", "prompt_id").rows())


def test_conform_missing_columns_raise():
    with pytest.raises(InputDataError) as exc:
        conform(prompts_rows().drop("split", "source"), PROMPTS)
    msg = str(exc.value)
    assert "split" in msg and "source" in msg and "Fix:" in msg
    assert "\n" not in msg


def test_conform_nulls_in_required_columns_raise():
    df = prompts_rows().with_columns(text=pl.when(pl.col("split") == "test").then(None).otherwise("text"))
    with pytest.raises(InputDataError, match=r"nulls in \['text'\]"):
        conform(df, PROMPTS)


def test_conform_allows_nulls_in_nullable_columns():
    out = conform(prompts_rows(), PROMPTS)
    assert out["target"].null_count() == out.height
    assert out["answer"].null_count() == 3


def test_conform_rejects_uncastable_values():
    df = prompts_rows().with_columns(difficulty=pl.lit("hard"))
    with pytest.raises(pl.exceptions.InvalidOperationError):
        conform(df, PROMPTS)


def test_write_table_is_byte_identical_for_any_row_order(tmp_path):
    df = prompts_rows(30)
    a = write_table(df, tmp_path / "a" / "p.parquet", PROMPTS)
    b = write_table(df.reverse(), tmp_path / "b" / "p.parquet", PROMPTS)
    c = write_table(df.sample(fraction=1.0, shuffle=True, seed=1).select(reversed(df.columns)),
                    tmp_path / "c" / "p.parquet", PROMPTS)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, c)}
    assert len(digests) == 1
    back = pl.read_parquet(a)
    assert back.schema == PROMPTS.schema
    assert back.select("split", "prompt_id").rows() == sorted(back.select("split", "prompt_id").rows())


def test_write_table_is_atomic_and_leaves_no_temp_file(tmp_path):
    path = write_table(prompts_rows(), tmp_path / "p.parquet", PROMPTS)
    write_table(prompts_rows(9), path, PROMPTS)  # overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]
    assert pl.read_parquet(path).height == 9


def test_write_table_conforms_before_writing(tmp_path):
    with pytest.raises(InputDataError):
        write_table(prompts_rows().drop("text"), tmp_path / "p.parquet", PROMPTS)
    assert not any(tmp_path.iterdir())


def test_read_table_round_trip_and_missing_file(tmp_path):
    path = write_table(prompts_rows(), tmp_path / "p.parquet", PROMPTS)
    assert read_table(path, PROMPTS).equals(conform(prompts_rows(), PROMPTS))
    with pytest.raises(InputDataError, match="file not found"):
        read_table(tmp_path / "nope.parquet", PROMPTS)


def test_stable_ids_normalise_case_and_whitespace():
    variants = ["Mia has 3 pens.", "mia HAS 3 pens.", "  Mia   has\t3\npens.  ", "\tMIA has 3 pens.\n",
                "Mia has 3 pens. "]
    ids = stable_ids(pl.Series(variants))
    assert ids.name == "prompt_id"
    assert ids.dtype == pl.String
    assert ids.n_unique() == 1
    expected = hashlib.sha256(b"mia has 3 pens.").hexdigest()[:16]
    assert ids[0] == expected


def test_stable_ids_distinguish_different_texts():
    ids = stable_ids(pl.Series(["Mia has 3 pens.", "Mia has 4 pens.", "Mia has3 pens."]))
    assert ids.n_unique() == 3
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_stable_ids_keep_order_and_length():
    texts = [f"t{i}" for i in range(100)]
    ids = stable_ids(pl.Series(texts))
    assert ids.to_list() == [hashlib.sha256(t.encode()).hexdigest()[:16] for t in texts]


def test_tables_registry():
    assert set(TABLES) == {"prompts", "samples", "scored", "probe", "selected", "pairs", "judged", "calibration", "allocation"}
    for table in TABLES.values():
        assert set(table.key) <= set(table.columns)
        assert table.nullable <= set(table.columns) | set(table.optional)
        assert not set(table.optional) & set(table.columns)
        assert not (set(table.key) & table.nullable)
    assert SELECTED.key == ("origin", "prompt_id", "sample_idx")


def _samples(n: int = 4) -> pl.DataFrame:
    from tasks.data.schema import SAMPLES

    return pl.DataFrame({"prompt_id": [f"p{i % 2}" for i in range(n)], "sample_idx": list(range(n)),
                         "iteration": "0001", "text": "x", "n_tokens": 1, "finish_reason": "stop",
                         "temperature": 1.0, "seed": 0, "model_hash": "m", "pass_name": "main"}).select(
        list(SAMPLES.columns))


def test_optional_columns_are_written_only_when_present(tmp_path):
    from tasks.data.schema import SAMPLES

    plain = conform(_samples(), SAMPLES)
    assert plain.columns == list(SAMPLES.columns)
    marked = _samples().with_columns(hint=pl.lit(None, pl.String), origin=pl.lit("self"), extra=pl.lit(1))
    out = conform(marked, SAMPLES)
    assert out.columns == [*SAMPLES.columns, "origin", "hint"]  # after the required ones, in schema order; extra dropped
    with pytest.raises(InputDataError, match="nulls in"):
        conform(_samples().with_columns(origin=pl.lit(None, pl.String)), SAMPLES)  # origin is never null


def test_conform_without_optional_columns_gives_the_old_bytes(tmp_path):
    from tasks.data.schema import SAMPLES, Table

    old = Table("samples", dict(SAMPLES.columns), key=SAMPLES.key)  # the table as it was, no optional columns
    a = write_table(_samples(), tmp_path / "a.parquet", SAMPLES)
    b = write_table(_samples(), tmp_path / "b.parquet", old)
    assert a.read_bytes() == b.read_bytes()


def test_with_origin_marks_old_tables_self():
    from tasks.data.schema import with_origin

    assert with_origin(_samples())["origin"].to_list() == ["self"] * 4
    kept = _samples().with_columns(origin=pl.lit("hinted"))
    assert with_origin(kept)["origin"].to_list() == ["hinted"] * 4
