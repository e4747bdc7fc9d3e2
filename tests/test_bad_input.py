"""Every class of bad input on an existing workspace: a one-line error naming file, field and fix,
a non-zero exit, and the workspace exactly as it was (commits, tags, files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flywheel.cli import app
from tests.conftest import git, write_recipe

runner = CliRunner()

ROWS = [{"text": f"Q{i}: what is {i}+{i}?", "answer": str(2 * i), "split": s,
         "target": f"{i}+{i}={2 * i}. Answer: {2 * i}" if s == "seed" else None}
        for i, s in enumerate(["seed"] * 4 + ["train"] * 8 + ["probe"] * 2 + ["test"] * 4)]
# a file source without difficulties samples the whole pool
FILE_SOURCE = {"prompts.source": {"type": "file", "path": "", "target_column": "target"},
               "pool.difficulty_schedule": None}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _snapshot(ws: Path) -> tuple:
    files = sorted((str(p.relative_to(ws)), p.stat().st_size) for p in ws.rglob("*")
                   if p.is_file() and ".git" not in p.parts and ".flywheel" not in p.parts)
    return git(ws, "rev-parse", "HEAD"), git(ws, "tag", "--list"), files


def _edit_recipe(ws: Path, dotted: str, value) -> None:
    data = yaml.safe_load((ws / "flywheel.yaml").read_text())
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    (ws / "flywheel.yaml").write_text(yaml.safe_dump(data))


@pytest.fixture
def file_workspace(tmp_path):
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", ROWS)
    recipe = write_recipe(tmp_path / "r.yaml", {**FILE_SOURCE, "prompts.source": {
        **FILE_SOURCE["prompts.source"], "path": str(prompts)}})
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["init", str(ws), "--config", str(recipe)])
    assert result.exit_code == 0, result.stderr
    return ws, prompts


def _corrupt_prompts(kind: str, prompts: Path) -> None:
    if kind == "missing column":
        _write_jsonl(prompts, [{k: v for k, v in r.items() if k != "split"} for r in ROWS])
    elif kind == "extra column":
        _write_jsonl(prompts, [{**r, "notes": "x"} for r in ROWS])
    elif kind == "wrong encoding":
        prompts.write_bytes('{"text": "caf\u00e9", "answer": "1", "split": "train"}\n'.encode("latin-1"))
    elif kind == "empty file":
        prompts.write_bytes(b"")
    elif kind == "duplicate ids":
        _write_jsonl(prompts, ROWS + [{**ROWS[5], "text": ROWS[5]["text"].upper()}])
    elif kind == "empty prompt":
        _write_jsonl(prompts, [{**r, "text": "  "} if i == 6 else r for i, r in enumerate(ROWS)])
    elif kind == "answer type":
        _write_jsonl(prompts, [{**r, "answer": [1, 2]} if i == 2 else r for i, r in enumerate(ROWS)])
    elif kind == "too long":
        _write_jsonl(prompts, [{**r, "text": "x" * 400} if i == 9 else r for i, r in enumerate(ROWS)])


CASES = {
    "unknown key": (lambda ws, p: _edit_recipe(ws, "generate.temprature", 0.7), ["generate.temprature", "temperature"]),
    "wrong type": (lambda ws, p: _edit_recipe(ws, "generate.k", "eight"), ["generate.k", "integer"]),
    "out of range": (lambda ws, p: _edit_recipe(ws, "select.cap_per_prompt", 0), ["select.cap_per_prompt"]),
    "missing model folder": (lambda ws, p: _edit_recipe(ws, "model.init", {"type": "pretrained",
                                                                            "name_or_path": "/nowhere/model"}),
                             ["/nowhere/model", "model.init.name_or_path"]),
    "missing prompt file": (lambda ws, p: p.unlink(), ["prompts.jsonl", "not found"]),
    "missing column": (lambda ws, p: _corrupt_prompts("missing column", p), ["prompts.jsonl", "split"]),
    "extra column": (lambda ws, p: _corrupt_prompts("extra column", p), ["prompts.jsonl", "notes"]),
    "wrong encoding": (lambda ws, p: _corrupt_prompts("wrong encoding", p), ["prompts.jsonl", "UTF-8"]),
    "empty file": (lambda ws, p: _corrupt_prompts("empty file", p), ["prompts.jsonl", "empty"]),
    "duplicate ids": (lambda ws, p: _corrupt_prompts("duplicate ids", p), ["prompts.jsonl", "repeat"]),
    "empty prompt": (lambda ws, p: _corrupt_prompts("empty prompt", p), ["prompts.jsonl", "row 7", "empty"]),
    "answer type": (lambda ws, p: _corrupt_prompts("answer type", p), ["prompts.jsonl", "row 3", "'answer'", "list"]),
    "prompt beyond context": (lambda ws, p: _corrupt_prompts("too long", p),
                              ["prompts.jsonl", "row 10", "model.init.max_position_embeddings"]),
    "curriculum without difficulties": (lambda ws, p: _edit_recipe(ws, "pool.difficulty_schedule", [[1, 2]]),
                                        ["pool.difficulty_schedule", "difficulty_column"]),
    "budget never met": (lambda ws, p: _edit_recipe(ws, "check.min_selected", 500),
                         ["check.min_selected", "never pass"]),
    "misconfigured remote": (lambda ws, p: (ws / ".dvc/config").write_text(
        (ws / ".dvc/config").read_text().replace("url = ", "url = ftp://")), ["remote", "ftp"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_nothing_changes(file_workspace, case):
    ws, prompts = file_workspace
    break_it, must_mention = CASES[case]
    break_it(ws, prompts)
    before = _snapshot(ws)
    result = runner.invoke(app, ["run", "-w", str(ws)])
    assert result.exit_code == 2, (case, result.stderr, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix:" in lines[0], lines
    for text in must_mention:
        assert text in lines[0], (case, lines[0])
    assert _snapshot(ws) == before


# ---------------------------------------------------------------- refused at init, before anything exists
def _init(tmp_path: Path, rows: list[dict], **overrides) -> tuple[Path, str]:
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", rows)
    source = {**FILE_SOURCE["prompts.source"], "path": str(prompts), **overrides.pop("source", {})}
    recipe = write_recipe(tmp_path / "r.yaml", {**FILE_SOURCE, "prompts.source": source, **overrides})
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["init", str(ws), "--config", str(recipe)])
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert not ws.exists()
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix:" in lines[0], lines
    return prompts, lines[0]


def _unsplit(n: int) -> list[dict]:
    return [{"text": f"Q{i}: what is {i}+{i}?", "answer": str(2 * i), "target": f"{i}+{i}={2 * i}"} for i in range(n)]


INIT_CASES = {
    "empty prompt": (lambda: ([{**r, "text": None} if i == 4 else r for i, r in enumerate(ROWS)], {}),
                     ["row 5", "empty or missing", "'text'"]),
    "answer of wrong type": (lambda: ([{**r, "answer": {"v": 1}} if i == 0 else r for i, r in enumerate(ROWS)], {}),
                             ["row 1", "'answer'", "an object", "text or a number"]),
    "prompt beyond context": (lambda: ([{**r, "text": "q" * 300} if i == 13 else r for i, r in enumerate(ROWS)], {}),
                              ["row 14", "300 characters", "context of 256 tokens"]),
    "curriculum beyond the file": (
        lambda: ([{**r, "level": 1 + i % 2} for r, i in zip(ROWS, range(len(ROWS)))],
                 {"source": {"difficulty_column": "level"}, "pool.difficulty_schedule": [[1], [2, 3]]}),
        ["pool.difficulty_schedule", "[3]", "only [1, 2]"]),
    "budget never met": (lambda: (ROWS, {"check.min_selected": 9}), ["check.min_selected", "at most 8"]),
    "carve leaves too few seeds": (
        lambda: (_unsplit(80), {"source": {"splits": {"test": 0.25, "probe": 4, "seed": 0.05}},
                                "warmup.batch_size": 16}),
        ["prompts.source.splits.seed", "needs 16 labelled seed row(s)", "80 of 80 rows have a target"]),
    "test as a count": (lambda: (_unsplit(80), {"source": {"splits": {"test": 20}}}),
                        ["prompts.source", "test must be a share"]),
}


@pytest.mark.parametrize("case", list(INIT_CASES))
def test_init_refuses_bad_rows_and_contradictions(tmp_path, case):
    make, must_mention = INIT_CASES[case]
    rows, overrides = make()
    prompts, line = _init(tmp_path, rows, **overrides)
    for text in must_mention:
        assert text in line, (case, line)
    if case not in ("budget never met", "test as a count"):
        assert str(prompts) in line, line


def test_init_accepts_a_carved_file(tmp_path):
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", _unsplit(120))
    recipe = write_recipe(tmp_path / "r.yaml", {**FILE_SOURCE, "prompts.source": {
        **FILE_SOURCE["prompts.source"], "path": str(prompts), "splits": {"test": 0.2, "probe": 8, "seed": 0.3}}})
    result = runner.invoke(app, ["init", str(tmp_path / "ws"), "--config", str(recipe)])
    assert result.exit_code == 0, result.stderr
