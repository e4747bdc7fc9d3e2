"""Prompt files in the shapes real tools write are read; files that are something else are refused
in one line that says what was found and the exact fix; arbitrary bytes never crash the reader."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.config.recipe import FileSource
from tasks.errors import ConfigError, InputDataError
from tasks.stages.prepare import ingest_prompt_file

QUESTIONS = [f"What is {i} plus {i}?" for i in range(6)]
ANSWERS = [2 * i for i in range(6)]
SPLITS = ["train", "train", "train", "train", "test", "test"]


def _source(path: Path) -> FileSource:
    return FileSource(path=str(path))


def _expected_answers() -> list[str]:
    return [str(a) for a in ANSWERS]


# ---------------------------------------------------------------- good data, as other tools write it

def _pandas_category(path: Path) -> None:
    pd.DataFrame({"text": QUESTIONS, "answer": [str(a) for a in ANSWERS], "split": SPLITS}).astype(
        "category").to_parquet(path)


def _pandas_nullable_int(path: Path) -> None:
    pd.DataFrame({"text": QUESTIONS, "answer": pd.array(ANSWERS, dtype="Int64"), "split": SPLITS}).to_parquet(path)


def _arrow(path: Path, kind: pa.DataType) -> None:
    pq.write_table(pa.table({"text": pa.array(QUESTIONS, kind), "answer": pa.array([str(a) for a in ANSWERS], kind),
                             "split": pa.array(SPLITS, kind)}), path)


def _arrow_dictionary(path: Path) -> None:
    pq.write_table(pa.table({c: pa.array(v).dictionary_encode() for c, v in
                             (("text", QUESTIONS), ("answer", [str(a) for a in ANSWERS]), ("split", SPLITS))}), path)


def _parquet_dictionary_pages(path: Path) -> None:
    pq.write_table(pa.table({"text": QUESTIONS, "answer": [str(a) for a in ANSWERS], "split": SPLITS}), path,
                   use_dictionary=True)


GOOD = {"pandas category columns": _pandas_category,
        "pandas nullable Int64 answers": _pandas_nullable_int,
        "Arrow large_string": lambda p: _arrow(p, pa.large_string()),
        "Arrow string_view": lambda p: _arrow(p, pa.string_view()),
        "Arrow dictionary columns": _arrow_dictionary,
        "dictionary-encoded Parquet pages": _parquet_dictionary_pages}


@pytest.mark.parametrize("shape", sorted(GOOD))
def test_shapes_other_tools_write_are_read_as_text(tmp_path, shape):
    path = tmp_path / "prompts.parquet"
    GOOD[shape](path)
    out = ingest_prompt_file(_source(path))
    assert out["text"].to_list() == QUESTIONS
    assert out["answer"].to_list() == _expected_answers()
    assert out["split"].to_list() == SPLITS
    assert out.schema["text"] == pl.String


def test_a_missing_nullable_int_answer_is_read_as_a_missing_answer(tmp_path):
    path = tmp_path / "prompts.parquet"
    answers = pd.array([*ANSWERS[:-1], None], dtype="Int64")
    pd.DataFrame({"text": QUESTIONS, "answer": answers, "split": SPLITS}).to_parquet(path)
    out = ingest_prompt_file(_source(path))
    assert out["answer"].to_list() == [*_expected_answers()[:-1], None]


# ---------------------------------------------------------------- files that are something else

JSONL = "".join(json.dumps({"text": q, "answer": str(a), "split": s}) + "\n"
                for q, a, s in zip(QUESTIONS, ANSWERS, SPLITS, strict=True)).encode()


def _zip_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("prompts.jsonl", JSONL)
    return buf.getvalue()


# name -> (file name, bytes, what the error must say was found, what the fix must hold)
BAD = {
    "gzip under .jsonl": ("p.jsonl", gzip.compress(JSONL), "gzip-compressed", "gunzip -c"),
    "zip under .jsonl": ("p.jsonl", _zip_bytes(), "zip archive", "unzip"),
    "UTF-8 BOM": ("p.jsonl", b"\xef\xbb\xbf" + JSONL, "byte-order mark (BOM)", "remove the first three bytes"),
    "UTF-16": ("p.jsonl", JSONL.decode().encode("utf-16"), "UTF-16", "iconv -f UTF-16 -t UTF-8"),
    "latin-1": ("p.jsonl", '{"text": "caf\u00e9?", "answer": "1", "split": "train"}\n'.encode("latin-1"),
                "byte 0xe9 on line 1", "iconv -f LATIN1 -t UTF-8"),
    "JSON array": ("p.jsonl", json.dumps([{"text": q} for q in QUESTIONS]).encode(), "one JSON array", "jq -c '.[]'"),
    "pretty JSON array under .json": ("p.json", json.dumps([{"text": "a"}], indent=2).encode(), "one JSON array",
                                      "write_ndjson"),
    "CSV": ("p.jsonl", b"text,answer,split\nWhat is 1+1?,2,train\n", "holds CSV (line 1: 'text,answer,split')",
            "pl.read_csv"),
    "TSV": ("p.jsonl", b"text\tanswer\nWhat is 1+1?\t2\n", "tab-separated values", "separator="),
    "Parquet under .jsonl": ("p.jsonl", b"PAR1" + b"\x00" * 20, "Parquet bytes", ".parquet"),
    "JSON lines under .parquet": ("p.parquet", JSONL, "holds JSON lines", ".jsonl"),
    "a broken line": ("p.jsonl", JSONL + b'{"text": "x", \n', "line 7 is not a JSON object", "one JSON object per line"),
    "a number per line": ("p.jsonl", b"1\n2\n", "line 1 is not a JSON object", "one JSON object per line"),
    "NUL bytes": ("p.jsonl", b"\x00" * 64, "line 1 is not a JSON object", "one JSON object per line"),
    "100,000-level nesting": ("p.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
                              "nested too deeply", "one JSON object per line"),
}


def _assert_one_line(err: Exception, path: Path, *needles: str) -> str:
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and "Fix:" in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_file_that_is_something_else_is_refused_saying_what_it_holds(tmp_path, case):
    name, data, found, fix = BAD[case]
    path = tmp_path / name
    path.write_bytes(data)
    start = time.perf_counter()
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(_source(path))
    assert time.perf_counter() - start < 10
    msg = _assert_one_line(exc.value, path, found, fix)
    assert "ComputeError" not in msg and "re-encode the file as UTF-8" not in msg or case == "latin-1"
    fix_text = msg.split("Fix:", 1)[1]
    assert f"> {path}" not in fix_text.replace(f"> {path.with_suffix('')}.", "")  # never overwrites the input


def test_a_folder_given_as_the_file_is_named_as_a_folder(tmp_path):
    folder = tmp_path / "prompts.jsonl"
    folder.mkdir()
    (folder / "part-0.jsonl").write_bytes(JSONL)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(_source(folder))
    _assert_one_line(exc.value, folder, "is a folder", "part-0.jsonl", "one .parquet or .jsonl file")


@pytest.mark.timeout(30)
def test_a_fifo_given_as_the_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "prompts.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(_source(fifo))  # opening a FIFO for reading would wait for a writer forever
    _assert_one_line(exc.value, fifo, "FIFO (named pipe)", "not a regular file")


def test_a_dangling_symlink_names_its_target(tmp_path):
    link = tmp_path / "prompts.jsonl"
    link.symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(InputDataError) as exc:
        ingest_prompt_file(_source(link))
    _assert_one_line(exc.value, link, "symbolic link", "gone.jsonl", "does not exist")


# ---------------------------------------------------------------- arbitrary bytes

def _one_line_or_loaded(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"prompts{suffix}"
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            ingest_prompt_file(_source(path))
        except (InputDataError, ConfigError) as err:
            msg = str(err)
            assert msg and "\n" not in msg and str(path) in msg, msg
            assert "Fix:" in msg, msg
        assert time.perf_counter() - start < 5


def _jsonish() -> st.SearchStrategy[bytes]:
    """Byte strings near the format: JSON-lines rows with mutations spliced in."""
    row = st.fixed_dictionaries({"text": st.text(max_size=20), "answer": st.one_of(
        st.text(max_size=5), st.integers(), st.floats(allow_nan=False), st.none(), st.lists(st.integers(), max_size=2)),
        "split": st.sampled_from(["train", "test", "seed", "probe", "other"])})
    lines = st.lists(row.map(lambda r: json.dumps(r).encode()), min_size=1, max_size=6)
    noise = st.binary(max_size=12)
    return st.tuples(lines, noise, st.integers(0, 200)).map(
        lambda t: (b"\n".join(t[0]) + b"\n")[: t[2]] + t[1] + (b"\n".join(t[0]) + b"\n")[t[2]:])


@settings(max_examples=100, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=512), _jsonish()))
def test_arbitrary_bytes_as_a_jsonl_file_load_or_are_refused_in_one_line(data):
    _one_line_or_loaded(".jsonl", data)


@settings(max_examples=50, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=512), keep=st.integers(0, 4000))
def test_arbitrary_or_truncated_bytes_as_a_parquet_file_load_or_are_refused_in_one_line(data, keep):
    import io

    buf = io.BytesIO()
    pq.write_table(pa.table({"text": QUESTIONS, "answer": [str(a) for a in ANSWERS], "split": SPLITS}), buf)
    good = buf.getvalue()
    _one_line_or_loaded(".parquet", good[:keep] + data + good[keep + len(data):])
