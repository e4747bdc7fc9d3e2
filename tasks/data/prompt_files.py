"""Reading a user's prompt file: where it is, whether it parses, and whether each row's values have
the types the prompts table needs. Every refusal names the file, the row or column, and the fix,
before any compute runs."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from tasks.config.recipe import FileSource
from tasks.data.schema import SPLITS
from tasks.errors import InputDataError
from tasks.workspace.provenance import CODE_ROOT

# What each mapped column may hold, as DuckDB names JSON value types (JSON null is always allowed).
NUMBERS = {"UBIGINT", "BIGINT", "DOUBLE"}
JSON_TYPES = {"text": {"VARCHAR"}, "answer": {"VARCHAR", *NUMBERS}, "target": {"VARCHAR", *NUMBERS},
              "difficulty": {"VARCHAR", "UBIGINT", "BIGINT"}, "split": {"VARCHAR"}}
TYPE_WORDS = {"VARCHAR": "text", "UBIGINT": "a whole number", "BIGINT": "a whole number",
              "DOUBLE": "a decimal number", "BOOLEAN": "true/false", "ARRAY": "a list", "OBJECT": "an object"}
WANTED = {"text": "text", "answer": "text or a number", "target": "text or a number",
          "difficulty": "a whole number or text holding one (e.g. 'Level 3')", "split": f"one of {list(SPLITS)}"}

def locate(path: str) -> Path:
    """A relative path from the working directory, else from the code repository (where data/examples
    lives), so a shipped recipe also works from inside a workspace (`dvc repro`, `flywheel reproduce`)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    in_repo = CODE_ROOT / p
    return in_repo if in_repo.exists() else p


# What a file's first bytes say it is, when it is not what its name says (checked in this order)
MAGIC = ((b"\x1f\x8b", "gzip-compressed bytes"), (b"PK\x03\x04", "a zip archive"),
         (b"\x28\xb5\x2f\xfd", "zstd-compressed bytes"), (b"BZh", "bzip2-compressed bytes"),
         (b"\xfd7zXZ\x00", "xz-compressed bytes"), (b"PAR1", "Parquet bytes"))
UNPACK = {"gzip-compressed bytes": "gunzip -c {f} > {s}.unpacked.jsonl", "a zip archive": "unzip {f}",
          "zstd-compressed bytes": "zstd -dc {f} > {s}.unpacked.jsonl",
          "bzip2-compressed bytes": "bzip2 -dc {f} > {s}.unpacked.jsonl",
          "xz-compressed bytes": "xz -dc {f} > {s}.unpacked.jsonl", "Parquet bytes": "mv {f} {s}.parquet"}
HEAD_BYTES = 4096
TO_JSONL = ("`python -c \"import polars as pl; pl.read_{kind}('{f}'{opt}).write_ndjson('{s}.lines.jsonl')\"`, "
            "then point prompts.source.path at {s}.lines.jsonl")


def _kind_of_path(where: Path) -> str | None:
    """What a path that is not a regular file is, in words (None when it is a regular file)."""
    import stat

    try:
        mode = where.stat().st_mode
    except OSError:
        return None if where.is_file() else "missing"
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "not a regular file")


def _sniff(where: Path, path: str) -> None:
    """Refuse, naming what was found and the exact fix, a file whose first bytes show it is not the
    format its name says: compressed or Parquet bytes, a byte-order mark, a JSON array, CSV."""
    import shlex

    with where.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    f, stem = shlex.quote(str(path)), shlex.quote(str(Path(path).with_suffix("")))
    parquet = where.suffix == ".parquet"
    for magic, what in MAGIC:
        if head.startswith(magic) and not (parquet and magic == b"PAR1"):
            fix = UNPACK[what].format(f=f, s=stem)
            fix = f"decompress it first: `{fix}`" if "compressed" in what else f"`{fix}`"
            raise InputDataError(f"holds {what}, not {'Parquet' if parquet else 'JSON lines'}.", file=path,
                                 fix=f"{fix}, then point prompts.source.path at the result.")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputDataError("is UTF-16 text (it starts with a UTF-16 byte-order mark).", file=path,
                             fix=f"re-encode it as UTF-8: `iconv -f UTF-16 -t UTF-8 {f} > {stem}.utf8.jsonl`.")
    if head.startswith(b"\xef\xbb\xbf"):
        raise InputDataError("starts with a UTF-8 byte-order mark (BOM), which JSON lines do not allow.",
                             file=path, fix=f"remove the first three bytes: `sed -i '1s/^\\xEF\\xBB\\xBF//' {f}` "
                             "(or save as 'UTF-8' rather than 'UTF-8 with BOM').")
    if parquet:
        if not head.startswith(b"PAR1"):
            what = "JSON lines" if head.lstrip()[:1] == b"{" else "no Parquet header"
            fix = f"`mv {f} {stem}.jsonl`" if what == "JSON lines" else "write it again with a Parquet writer"
            raise InputDataError(f"is not Parquet (it holds {what}).", file=path, fix=f"{fix}.")
        return
    first = head.lstrip(b" \t\r\n")[:1]
    if first == b"[":
        raise InputDataError("holds one JSON array; a JSON-lines file holds one JSON object per line.", file=path,
                             fix=f"`jq -c '.[]' {f} > {stem}.lines.jsonl`, or "
                                 + TO_JSONL.format(kind="json", f=path, opt="", s=Path(path).with_suffix("")) + ".")
    if first and first != b"{":
        line = head.split(b"\n", 1)[0].rstrip(b"\r")
        text = line.decode("utf-8", "replace")
        if any(sep in text for sep in (",", "\t", ";")) and '{' not in text and "\x00" not in text:
            shown = text if len(text) <= 60 else text[:57] + "..."
            kind = "tab-separated values" if "\t" in text else "CSV"
            raise InputDataError(f"holds {kind} (line 1: {shown!r}), not JSON lines.", file=path,
                                 fix=TO_JSONL.format(kind="csv", f=path, s=Path(path).with_suffix(""),
                                                     opt="" if kind == "CSV" else ", separator='\\t'") + ".")
        shown = line[:40].decode("utf-8", "replace")
        raise InputDataError(f"cannot be read: line 1 is not a JSON object (it starts with {shown!r}).", file=path,
                             fix="write one JSON object per line, such as {\"text\": \"...\", \"answer\": \"...\"}.")


def _utf8_error(err: UnicodeDecodeError, where: Path, path: str) -> InputDataError:
    with where.open("rb") as fh:
        before = fh.read(err.start)
    line = before.count(b"\n") + 1
    bad = err.object[err.start:err.start + 1].hex()
    return InputDataError(f"not valid UTF-8 (byte 0x{bad} on line {line}; latin-1 or Windows-1252 text?).",
                          file=path, fix=f"re-encode the file as UTF-8, e.g. `iconv -f LATIN1 -t UTF-8 "
                          f"{path} > {Path(path).with_suffix('')}.utf8.jsonl` when it is latin-1.")


def _text_columns(df: pl.DataFrame) -> pl.DataFrame:
    """The shapes other tools write for text: pandas `category` and Arrow dictionary columns arrive
    as Categorical (or Enum); read them as the strings they hold."""
    cats = [c for c, t in df.schema.items() if isinstance(t, pl.Categorical | pl.Enum)]
    return df.with_columns(pl.col(cats).cast(pl.String)) if cats else df


def read_prompt_file(path: str, field: str = "prompts.source.path") -> pl.DataFrame:
    """A Parquet or JSON-lines file as a frame; any reading failure is one line naming the file,
    what was found and the fix."""
    where = locate(path)
    kind = _kind_of_path(where)
    if kind == "missing" and where.is_symlink():
        raise InputDataError(f"is a symbolic link to {where.readlink()}, which does not exist.", file=path,
                             field=field, fix="restore the file it points to, or point the recipe at the file itself.")
    if kind == "missing":
        raise InputDataError("file not found.", file=path, field=field,
                             fix="point it at an existing .parquet or .jsonl file.")
    if kind == "a folder":
        inside = sorted(p.name for p in where.glob("*") if p.suffix in (".parquet", ".jsonl"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise InputDataError(f"is a folder, not a file{hint}.", file=path, field=field,
                             fix="point it at one .parquet or .jsonl file, or give one per split: "
                                 "{train: a.jsonl, test: b.jsonl}.")
    if kind is not None:
        raise InputDataError(f"is {kind}, not a regular file.", file=path, field=field,
                             fix="save the prompts to a .parquet or .jsonl file and point the recipe at it.")
    if where.suffix not in (".parquet", ".jsonl", ".json"):
        raise InputDataError(f"unsupported file type '{where.suffix}'.", file=path, fix="use .parquet or .jsonl.")
    if where.stat().st_size == 0:
        raise InputDataError("file is empty.", file=path, fix="add prompts to the file.")
    _sniff(where, path)
    try:
        if where.suffix == ".parquet":
            return _text_columns(pl.read_parquet(where))
        try:
            where.read_text(encoding="utf-8")  # fail early on a wrong encoding
        except UnicodeDecodeError as err:
            raise _utf8_error(err, where, path) from None
        return pl.read_ndjson(where, infer_schema_length=None)
    except InputDataError:
        raise
    except BaseException as exc:  # polars raises several types for malformed files, and panics
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        if where.suffix != ".parquet":
            _mixed_json_types(path)
            _first_bad_line(where, path)
        raise InputDataError(f"cannot be read ({type(exc).__name__}: {_first_line(exc)}).", file=path,
                             fix="check that it is valid Parquet or JSON lines (one JSON object per line).") from None


def _first_bad_line(where: Path, path: str) -> None:
    """The first line that is not one JSON object, named with Python's reason (one linear pass)."""
    import json

    with where.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except RecursionError:
                reason = "nested too deeply"
            except ValueError as err:
                reason = str(err).split(":", 1)[0]
            else:
                if isinstance(value, dict):
                    continue
                reason = f"it holds {type(value).__name__ if value is not None else 'null'}, not an object"
            raise InputDataError(f"cannot be read: line {number} is not a JSON object ({reason}).", file=path,
                                 fix="write one JSON object per line, such as {\"text\": \"...\", \"answer\": \"...\"}.")


def _first_line(exc: BaseException, limit: int = 120) -> str:
    from tasks.workspace.secrets import redact

    text = str(exc)[:4 * limit].strip().split("\n", 1)[0]
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mixed_json_types(path: str) -> None:
    """Why Polars could not read a JSON-lines file, when the cause is a key whose values mix kinds
    (a number on one row, a list on another): name the key and the first row of each kind."""
    import duckdb

    sql = """
        WITH cells AS (
            SELECT ordinality AS row, k,
                   json_type(json, '/' || replace(replace(k, '~', '~0'), '/', '~1')) AS t
            FROM read_ndjson_objects(?) WITH ORDINALITY, unnest(json_keys(json)) AS u(k))
        SELECT k, CASE WHEN t IN ('UBIGINT', 'BIGINT', 'DOUBLE') THEN 'number' ELSE t END AS kind, min(row) AS first
        FROM cells WHERE t <> 'NULL' GROUP BY ALL ORDER BY first"""
    try:
        kinds = duckdb.connect().execute(sql, [str(locate(path))]).pl()
    except duckdb.Error:
        return
    mixed = kinds.filter(pl.col("k").is_duplicated())
    if mixed.height:
        key = mixed["k"][0]
        (_, k1, r1), (_, k2, r2) = mixed.filter(pl.col("k") == key).head(2).iter_rows()
        words = {"number": "a number", **TYPE_WORDS}
        raise InputDataError(f"row {r2}: column '{key}' holds {words.get(k2, k2)}, but row {r1} holds "
                             f"{words.get(k1, k1)}.", file=path, field=key,
                             fix=f"give '{key}' one kind of value on every row (answers: text or numbers).")


def _json_type_errors(path: str, mapping: dict[str, str]) -> None:
    """Polars reads a JSON column of mixed types as text (a list becomes '[1, 2]'), so look at each
    row's own JSON type: one DuckDB pass over the file."""
    import duckdb

    keys = list(mapping)
    pointers = ["/" + mapping[k].replace("~", "~0").replace("/", "~1") for k in keys]
    cols = ", ".join(f"json_type(json, ?) AS t{i}" for i in range(len(keys)))
    con = duckdb.connect()
    try:
        rel = con.execute(f"SELECT ordinality AS row, {cols} FROM read_ndjson_objects(?) WITH ORDINALITY",
                          [*pointers, str(locate(path))]).pl()
    except duckdb.Error:
        return  # unreadable lines were already refused by the Polars read
    for i, key in enumerate(keys):
        t = pl.col(f"t{i}")
        bad = rel.filter(t.is_not_null() & (t != "NULL") & ~t.is_in(sorted(JSON_TYPES[key])))
        if bad.height:
            row, kind = bad.row(0)[0], bad.row(0)[i + 1]
            raise InputDataError(f"row {row}: column '{mapping[key]}' holds {TYPE_WORDS.get(kind, kind)}; it must "
                                 f"hold {WANTED[key]} ({bad.height} row(s) in all).", file=path,
                                 field=mapping[key], fix=f"store {WANTED[key]} in '{mapping[key]}' on every row.")


def _dtype_ok(key: str, dtype: pl.DataType) -> bool:
    if dtype == pl.Null:
        return key != "text"
    if key in ("text", "split"):
        return dtype == pl.String
    if key in ("answer", "target"):  # the target column is often the answer column itself
        return dtype == pl.String or dtype.is_numeric()
    return dtype == pl.String or dtype.is_integer()  # difficulty


def _first_row(df: pl.DataFrame, bad: pl.Expr) -> tuple[int, int]:
    hits = df.filter(bad)
    return (int(hits["_row"][0]), hits.height) if hits.height else (0, 0)


def _check_rows(df: pl.DataFrame, mapping: dict[str, str], path: str) -> None:
    """Empty prompts, unreadable difficulties and unknown split names, each named by its row."""
    row, n = _first_row(df, pl.col("text").str.strip_chars().fill_null("") == "")
    if n:
        raise InputDataError(f"row {row}: the prompt text in column '{mapping['text']}' is empty or missing "
                             f"({n} row(s) in all).", file=path, field=mapping["text"],
                             fix="fill in the prompt or delete the row.")
    if "difficulty" in df.columns and df.schema["difficulty"] == pl.String:
        row, n = _first_row(df, pl.col("difficulty").is_not_null()
                            & pl.col("difficulty").str.extract(r"(-?\d+)", 1).is_null())
        if n:
            raise InputDataError(f"row {row}: difficulty {df.filter(pl.col('_row') == row)['difficulty'][0]!r} "
                                 f"holds no whole number ({n} row(s) in all).", file=path, field=mapping["difficulty"],
                                 fix="use whole numbers or text holding one, such as 'Level 3'.")
    if "split" in df.columns:
        row, n = _first_row(df, ~pl.col("split").is_in(list(SPLITS)).fill_null(False))
        if n:
            value = df.filter(pl.col("_row") == row)["split"][0]
            raise InputDataError(f"row {row}: unknown split value {value!r} ({n} row(s) in all).", file=path,
                                 field=mapping["split"], fix=f"use one of {list(SPLITS)}.")


def read_mapped(src: FileSource, path: str, split: str | None) -> pl.DataFrame:
    """One prompt file mapped onto the prompts table's columns, plus `_file` and `_row` (1-based) so
    later checks can name the row. `split`: the split of every row (one file per split), or None
    when a split column is read or the splits are carved."""
    df = read_prompt_file(path)
    mapping = {"text": src.text_column}
    if split is None and src.splits is None:
        mapping["split"] = src.split_column
    for key, column in (("answer", src.answer_column), ("difficulty", src.difficulty_column),
                        ("target", src.target_column)):
        if column:
            mapping[key] = column
    missing = [col for col in mapping.values() if col not in df.columns]
    if missing:
        raise InputDataError(f"missing column(s) {missing}; found {df.columns}.", file=path,
                             field="prompts.source", fix="add the column or set the matching *_column option.")
    extra = [col for col in df.columns if col not in mapping.values() and col not in src.extra_columns]
    if extra:
        carved = src.split_column in extra and (src.splits is not None or split is not None)
        fix = (f"the splits come from {'prompts.source.splits' if src.splits is not None else 'one file per split'}"
               f"; drop the '{src.split_column}' column or list it in prompts.source.extra_columns." if carved else
               "map them with *_column, list them in prompts.source.extra_columns, or drop them.")
        raise InputDataError(f"unexpected column(s) {extra}.", file=path, field="prompts.source", fix=fix)
    if df.height == 0:
        raise InputDataError("no rows.", file=path, fix="add prompts to the file.")
    if locate(path).suffix != ".parquet":
        _json_type_errors(path, mapping)
    for key, column in mapping.items():
        if not _dtype_ok(key, df.schema[column]):
            must = "must hold text" if key == "text" else f"must hold {WANTED[key]}"
            raise InputDataError(f"column '{column}' {must}, not {df.schema[column]}.", file=path, field=column,
                                 fix=f"store {WANTED[key]} in '{column}'.")
    out = df.select([pl.col(v).alias(k) for k, v in mapping.items()]).with_row_index("_row", offset=1)
    out = out.with_columns(pl.col("_row").cast(pl.Int64), _file=pl.lit(path),
                           **({"split": pl.lit(split)} if split else {}))
    _check_rows(out, mapping, path)
    return out

