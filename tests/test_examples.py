"""data/examples and their recipes (configs/example-*.yaml): each passes preflight, prepares the splits
its recipe describes, and (slow) runs end to end offline on the tiny model."""

from __future__ import annotations

import subprocess
from pathlib import Path

import polars as pl
import pytest

from tasks.config.loading import load_recipe
from tasks.data.schema import PROMPTS, read_table
from tasks.preflight import preflight
from tasks.stages.prepare import prepare
from tests.conftest import flywheel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "data" / "examples"
RECIPES = sorted((ROOT / "configs").glob("example-*.yaml"))


def test_every_example_file_is_tracked_and_documented():
    files = sorted(p.relative_to(ROOT / "data").as_posix() for p in EXAMPLES.rglob("*.jsonl"))
    assert len(files) == 5
    ignored = subprocess.run(["git", "check-ignore", *(f"data/{f}" for f in files)], cwd=ROOT,
                             capture_output=True, text=True).stdout
    assert ignored == "", f"git ignores {ignored}"
    readme = (ROOT / "data" / "README.md").read_text()
    for f in files:
        assert f in readme, f
    recipes = " ".join(p.read_text() for p in RECIPES)
    for f in files:
        assert f"data/{f}" in recipes, f"no recipe reads {f}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_example_recipe_passes_preflight_and_prepares(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative example paths resolve from the code repository too
    recipe = load_recipe(path)
    preflight(recipe, tmp_path / "ws")
    df = read_table(prepare(recipe, tmp_path / "prompts.parquet"), PROMPTS)
    sizes = dict(df.group_by("split").len().iter_rows())
    assert set(sizes) == {"seed", "train", "probe", "test"}, sizes
    assert df.filter(pl.col("split") == "seed")["target"].null_count() == 0
    assert df.filter(pl.col("split") != "seed")["target"].null_count() == df.height - sizes["seed"]
    expected = {"example-gsm8k": {"test": 30, "probe": 8}, "example-math": {"seed": 24, "train": 32, "probe": 8,
                                                                            "test": 16},
                "example-mbpp": {"seed": 5, "train": 7, "probe": 2, "test": 4}, "example-plain": {"probe": 24}}
    assert expected[path.stem].items() <= sizes.items()


def test_the_carved_example_is_stable_as_the_file_grows(tmp_path):
    """The README's claim on data/examples/arith.jsonl: a file with more rows keeps every old prompt's split."""
    import json

    recipe = load_recipe(ROOT / "configs" / "example-plain.yaml")
    src = recipe.prompts.source
    grown = tmp_path / "grown.jsonl"
    extra = [{"text": f"Leo owns {i} cards and finds {i} more. How many cards now?", "answer": str(2 * i),
              "solution": f"{i}+{i}={2 * i}. Answer: {2 * i}"} for i in range(10, 90)]
    grown.write_text((EXAMPLES / "arith.jsonl").read_text() + "".join(json.dumps(r) + "\n" for r in extra))
    shares = {k: v for k, v in src.splits.items() if isinstance(v, float)}  # counts trade a few prompts
    bigger = recipe.model_copy(update={"prompts": recipe.prompts.model_copy(update={
        "source": src.model_copy(update={"path": str(grown), "splits": shares})})})
    same = recipe.model_copy(update={"prompts": recipe.prompts.model_copy(update={
        "source": src.model_copy(update={"splits": shares})})})
    before = dict(read_table(prepare(same, tmp_path / "b.parquet"), PROMPTS).select("prompt_id", "split").iter_rows())
    after = dict(read_table(prepare(bigger, tmp_path / "c.parquet"), PROMPTS).select("prompt_id", "split").iter_rows())
    assert len(after) == len(before) + len(extra)
    assert {p: after[p] for p in before} == before


@pytest.mark.parametrize("name", ["example-plain", "example-gsm8k"])
def test_prepare_inside_the_workspace_reads_the_same_example_files(name, tmp_path, monkeypatch):
    """`dvc repro` runs stages with the workspace as working directory: the recipe's relative paths
    still find data/examples, and the table is the one prepared from the repository root."""
    from tasks.pipeline import run_stage
    from tasks.workspace.repo import init_workspace

    recipe = load_recipe(ROOT / "configs" / f"{name}.yaml")
    from_root = prepare(recipe, tmp_path / "root.parquet")
    hf = recipe.model_copy(update={"generate": recipe.generate.model_copy(update={"backend": "hf"})})
    layout = init_workspace(tmp_path / "ws", hf)  # no engine probe: the backend is fixed
    monkeypatch.chdir(layout.root)
    run_stage(layout, "prepare")  # what `flywheel stage prepare` (dvc.yaml's command) runs
    assert layout.prompts.read_bytes() == from_root.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["example-plain", "example-gsm8k"])
def test_example_recipe_runs_end_to_end(name, tmp_path):
    """One iteration of the shipped example recipe, as a user runs it from the repository root."""
    from tasks.workspace.layout import Layout

    ws = tmp_path / "ws"
    flywheel("run", "--workspace", str(ws), "--config", f"configs/{name}.yaml", "--iterations", "1")
    layout = Layout(ws)
    prompts = read_table(layout.prompts, PROMPTS)
    assert set(prompts["split"]) == {"seed", "train", "probe", "test"}
    assert layout.eval("0001").is_file()
