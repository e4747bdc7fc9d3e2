"""Verifier `unit_tests`, the MBPP loader on the fixture, and the MBPP preset recipe."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tasks.config.loading import load_recipe
from tasks.config.recipe import MBPPSource, Recipe, SandboxLimits, VerifierConfig
from tasks.data.mbpp import PROMPT_HINT, mbpp_prompts
from tasks.data.schema import PROMPTS, read_table, stable_ids
from tasks.errors import InputDataError
from tasks.stages.prepare import _read_prompt_file, prepare
from tasks.stages.score import score_table
from tasks.verify.code_verifier import CodeTestsVerifier, extract_code, parse_tests
from tasks.verify.verifiers import make_verifier
from tests.test_sandbox import sandbox_ready  # noqa: F401 - the fixture: fail in CI, skip elsewhere

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "mbpp" / "mbpp_tiny.jsonl"
LIMITS = SandboxLimits(cpu_seconds=1, memory_mb=256, wall_seconds=10, workers=2)
TESTS = json.dumps(["assert add(2, 3) == 5", "assert add(-1, 1) == 0"])
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n"
BAD = "```python\ndef add(a, b):\n    return a * b\n```"


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def prompts_frame(answers: list[str | None]) -> pl.DataFrame:
    df = pl.DataFrame({"text": [f"task {i}" for i in range(len(answers))], "answer": answers},
                      schema={"text": pl.String, "answer": pl.String})
    return df.with_columns(stable_ids(df["text"]))


def samples_frame(rows: list[tuple[str, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"prompt_id": pl.String, "sample_idx": pl.Int32, "text": pl.String},
                        orient="row")


class CountingVerifier(CodeTestsVerifier):
    """The real verifier, counting sandbox runs."""

    def __init__(self, limits: SandboxLimits) -> None:
        super().__init__(limits)
        self.runs = 0

    def _run(self, program):
        self.runs += program is not None
        return super()._run(program)


@pytest.mark.parametrize(("text", "code"), [
    ("```python\nx = 1\n```", "x = 1\n"),
    ("first\n```python\nx = 1\n```\nthen\n```python\nx = 2\n```\ndone", "x = 2\n"),
    ("```py\nx = 3\n```", "x = 3\n"),
    ("```\nx = 4\n```", "x = 4\n"),
    ("```python\nx = 5\n", "x = 5\n"),  # cut at max_new_tokens
    ("x = 6", "x = 6"),
    ("def f():\n    return 1", "def f():\n    return 1"),
])
def test_extract_code(text, code):
    assert pl.select(extract_code(pl.lit(text))).item() == code


def test_parse_tests():
    assert parse_tests(TESTS) == ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
    for bad in (None, "", "assert x", "[]", '{"a": 1}', "[1, 2]"):
        assert parse_tests(bad) is None


@pytest.mark.usefixtures("sandbox_ready")
def test_verdicts_keep_row_order_and_statuses():
    prompts = prompts_frame([TESTS, json.dumps(["assert mul(2, 3) == 6"]), None])
    a, b, c = prompts["prompt_id"]
    rows = [(b, 0, fenced("def mul(x, y):\n    return x * y")), (a, 1, BAD), (a, 0, GOOD),
            (b, 1, fenced("while True:\n    pass")), (a, 2, fenced("import socket\nsocket.socket()")),
            (c, 0, GOOD), (a, 3, "no code at all"), (b, 2, fenced("x = [0] * 10**9"))]
    samples = samples_frame(rows)
    out = CodeTestsVerifier(LIMITS).verify(samples, prompts)
    assert out.select("prompt_id", "sample_idx", "text").equals(samples)
    assert out["extracted_answer"].to_list() == ["passed", "failed", "passed", "timeout", "blocked", "no_tests",
                                                 "error", "memory"]
    assert out["correct"].to_list() == [True, False, True, False, False, False, False, False]


@pytest.mark.usefixtures("sandbox_ready")
def test_identical_code_runs_once_per_prompt():
    prompts = prompts_frame([TESTS, json.dumps(["assert add(1, 1) == 3"])])
    a, b = prompts["prompt_id"]
    same_code = [GOOD, "Sure!\n" + GOOD.split("\n", 1)[1], GOOD]  # same extracted code, different text
    rows = [(a, i, t) for i, t in enumerate(same_code)] + [(b, i, t) for i, t in enumerate(same_code)] + [(a, 9, BAD)]
    verifier = CountingVerifier(LIMITS)
    out = verifier.verify(samples_frame(rows), prompts)
    assert verifier.runs == 3  # (a, good), (b, good), (a, bad)
    assert out["correct"].to_list() == [True, True, True, False, False, False, False]


@pytest.mark.usefixtures("sandbox_ready")
def test_tests_that_cannot_be_checked_here_are_unsupported_and_run_nothing(caplog):
    prompts = prompts_frame([json.dumps(["assert all(add(x, 0) == x for x in range(3))"]), TESTS])
    a, b = prompts["prompt_id"]
    verifier = CountingVerifier(LIMITS)
    out = verifier.verify(samples_frame([(a, 0, GOOD), (b, 0, GOOD)]), prompts)
    assert out["extracted_answer"].to_list() == ["unsupported_tests", "passed"]
    assert verifier.runs == 1
    assert f"prompt {a} can never pass" in caplog.text


def test_an_unavailable_sandbox_refuses_before_any_sample_runs(monkeypatch):
    import tasks.verify.code_verifier as code_verifier
    from tasks.verify.sandbox.host import SandboxUnavailable

    def unavailable():
        raise SandboxUnavailable("bubblewrap (`bwrap`) is not installed", "install it.")

    monkeypatch.setattr(code_verifier, "require_sandbox", unavailable)
    verifier = CountingVerifier(LIMITS)
    with pytest.raises(SandboxUnavailable, match="bwrap"):
        verifier.verify(samples_frame([(prompts_frame([TESTS])["prompt_id"][0], 0, GOOD)]), prompts_frame([TESTS]))
    assert verifier.runs == 0


def test_make_verifier_reads_the_sandbox_limits():
    config = VerifierConfig(type="unit_tests", sandbox=LIMITS)
    verifier = make_verifier("unit_tests", config)
    assert isinstance(verifier, CodeTestsVerifier) and verifier.limits == LIMITS
    assert make_verifier("unit_tests").limits == SandboxLimits()


@pytest.mark.usefixtures("sandbox_ready")
def test_score_table_scores_code_samples():
    prompts = prompts_frame([TESTS])
    a = prompts["prompt_id"][0]
    scored = score_table(samples_frame([(a, 0, GOOD), (a, 1, BAD)]), prompts,
                         VerifierConfig(type="unit_tests", sandbox=LIMITS))
    assert scored["correct"].to_list() == [True, False]
    assert scored["score"].to_list() == [1.0, 0.0]


# ---------------------------------------------------------------- MBPP loader
def load_fixture(**kw) -> pl.DataFrame:
    src = MBPPSource(path=str(FIXTURE), **kw)
    return mbpp_prompts(_read_prompt_file(src), src)


def test_mbpp_loader_on_the_fixture():
    raw = pl.read_ndjson(FIXTURE)
    df = load_fixture(seed_size=3)
    assert df.height == raw.height == 12
    counts = dict(df.group_by("split").len().iter_rows())
    assert counts == {"seed": 3, "train": 4, "probe": 2, "test": 3}
    first = df.row(0, named=True)  # task 2
    assert first["text"] == (f"{raw['text'][0]}\n{PROMPT_HINT}\n{raw['test_list'][0][0]}")
    assert json.loads(first["answer"]) == raw["test_list"][0].to_list()
    assert first["target"].startswith("```python\ndef similar_elements") and "\r" not in first["target"]
    assert df.filter(pl.col("split") != "seed")["target"].null_count() == 9
    with_setup = df.filter(pl.col("text").str.contains("area of a circle"))
    assert json.loads(with_setup["answer"][0])[0] == "import math"
    assert set(df["source"]) == {"mbpp"}


def test_mbpp_splits_follow_task_id_ranges():
    df = load_fixture(seed_size=3).with_columns(task_id=pl.read_ndjson(FIXTURE)["task_id"])  # same row order
    by_split = {s: sorted(df.filter(pl.col("split") == s)["task_id"]) for s in ("seed", "train", "probe", "test")}
    assert by_split == {"seed": [2, 3, 601], "train": [602, 603, 604, 605], "probe": [511, 512], "test": [11, 12, 13]}
    assert load_fixture(seed_size=0).filter(pl.col("split") == "seed").height == 0


@pytest.mark.usefixtures("sandbox_ready")
def test_every_fixture_reference_solution_passes_its_tests():
    df = load_fixture(seed_size=3)
    raw = pl.read_ndjson(FIXTURE)
    texts = dict(zip(raw["task_id"], raw["code"]))
    ids = dict(zip(df["prompt_id"], raw["task_id"]))  # same row order
    samples = samples_frame([(pid, 0, fenced(texts[tid])) for pid, tid in ids.items()])
    out = CodeTestsVerifier(LIMITS).verify(samples, df)
    assert out["extracted_answer"].to_list() == ["passed"] * 12


def test_prepare_writes_the_mbpp_prompts_table(tmp_path):
    recipe = Recipe.model_validate({"prompts": {"source": {"type": "mbpp", "path": str(FIXTURE), "seed_size": 2}}})
    table = read_table(prepare(recipe, tmp_path / "prompts.parquet"), PROMPTS)
    assert table.height == 12 and table.filter(pl.col("split") == "seed").height == 2


def test_mbpp_split_column(tmp_path):
    raw = pl.read_ndjson(FIXTURE).with_columns(part=pl.lit("train"))
    path = tmp_path / "custom.jsonl"
    raw.with_columns(part=pl.when(pl.col("task_id") < 100).then(pl.lit("test")).otherwise("part")).write_ndjson(path)
    src = MBPPSource(path=str(path), split_column="part")
    counts = dict(mbpp_prompts(_read_prompt_file(src), src).group_by("split").len().iter_rows())
    assert counts == {"test": 5, "train": 7}


@pytest.mark.parametrize(("change", "message"), [
    (lambda df: df.drop("test_list"), "missing MBPP column"),
    (lambda df: df.with_columns(task_id=pl.lit(2000)), "no valid split"),
    (lambda df: df.with_columns(test_list=pl.lit([], pl.List(pl.String))), "task 2 has no tests"),
    (lambda df: df.with_columns(test_list=pl.when(pl.col("task_id") == 12).then(pl.lit([], pl.List(pl.String)))
                                .otherwise("test_list")), "task 12 has no tests"),
    (lambda df: df.with_columns(test_list=pl.lit("assert f()")), "list of strings"),
    (lambda df: df.with_columns(text=pl.lit("same"), test_list=pl.lit(["assert f()"])), "repeat a prompt"),
])
def test_mbpp_bad_input_is_one_clear_line(tmp_path, change, message):
    path = tmp_path / "bad.jsonl"
    change(pl.read_ndjson(FIXTURE)).write_ndjson(path)
    src = MBPPSource(path=str(path))
    with pytest.raises(InputDataError, match=message) as err:
        mbpp_prompts(_read_prompt_file(src), src)
    assert str(path) in str(err.value) and "Fix:" in str(err.value) and "\n" not in str(err.value)


def test_mbpp_preset_recipe_is_valid():
    recipe = load_recipe(ROOT / "configs" / "mbpp-qwen.yaml")
    assert recipe.verifier.type == "unit_tests"
    assert isinstance(recipe.prompts.source, MBPPSource)
    assert recipe.generate.backend == "vllm" and recipe.generate.k == 8


@pytest.mark.slow
@pytest.mark.usefixtures("sandbox_ready")
def test_flywheel_runs_an_iteration_on_the_mbpp_fixture(tmp_path):
    """The whole loop with the MBPP source and the unit_tests verifier (the micro model writes no real
    code, so every sample is scored as an error, but each one went through the sandbox)."""
    from tests.conftest import flywheel, write_recipe

    recipe = write_recipe(tmp_path / "mbpp.yaml", {
        "run.iterations": 1, "prompts.source": {"type": "mbpp", "path": str(FIXTURE), "seed_size": 3},
        "pool.prompts_per_iteration": None, "pool.difficulty_schedule": None, "generate.max_new_tokens": 48,
        "verifier": {"type": "unit_tests", "sandbox": LIMITS.model_dump()}})
    ws = tmp_path / "ws"
    flywheel("run", "-w", str(ws), "-c", str(recipe), "-n", "1")
    scored = pl.read_parquet(ws / "data" / "iterations" / "0001" / "scored.parquet")
    assert scored.height == 4 * 2  # the train pool (4 tasks) times k
    assert set(scored["extracted_answer"]) <= {"passed", "failed", "error", "timeout", "memory", "blocked"}


def test_preflight_refuses_a_code_recipe_where_the_sandbox_cannot_run(monkeypatch, tmp_path):
    import tasks.verify.sandbox.run as sandbox
    from tasks.preflight import preflight
    from tasks.verify.sandbox.host import SandboxUnavailable

    def unavailable():
        raise SandboxUnavailable("user namespaces are disabled", "enable them.")

    monkeypatch.setattr(sandbox, "require_sandbox", unavailable)
    recipe = load_recipe(Path(__file__).resolve().parent.parent / "configs" / "example-mbpp.yaml")
    with pytest.raises(SandboxUnavailable, match="user namespaces"):
        preflight(recipe, tmp_path / "ws")
