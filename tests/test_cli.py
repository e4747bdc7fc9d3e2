"""The CLI: --help everywhere, and bad input gets a one-line error, a non-zero exit, and no changes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from tests.conftest import git, write_recipe

runner = CliRunner()


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [[], ["init"], ["run"], ["serve"], ["status"], ["stage"]])
def test_help_explains_every_command(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout and len(result.stdout) > 200


@pytest.mark.parametrize(("overrides", "must_mention"), [
    ({"generate.kk": 3}, ["generate.kk", "did you mean 'k'"]),
    ({"generate.k": -2}, ["generate.k", "greater than or equal to 1"]),
    ({"model.init": {"type": "pretrained", "name_or_path": "./no/such/model"}},
     ["./no/such/model", "model.init.name_or_path", "not found"]),
    ({"remote.url": "ftp://example/bucket"}, ["remote.url", "ftp"]),
])
def test_bad_recipe_is_refused_before_anything_is_created(tmp_path, overrides, must_mention):
    recipe = write_recipe(tmp_path / "bad.yaml", overrides)
    ws = tmp_path / "ws"
    for cmd in (["init", str(ws), "--config", str(recipe)], ["run", "-w", str(ws), "-c", str(recipe)]):
        result = runner.invoke(app, cmd)
        assert result.exit_code == 2
        line = _one_line_error(result)
        for text in must_mention:
            assert text in line
        assert "Fix:" in line
        assert not ws.exists()


def test_prompt_file_with_missing_column_is_refused(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"question": "1+1?", "split": "train"}\n', encoding="utf-8")
    recipe = write_recipe(tmp_path / "bad.yaml", {"prompts.source": {"type": "file", "path": str(prompts)}})
    result = runner.invoke(app, ["init", str(tmp_path / "ws"), "--config", str(recipe)])
    assert result.exit_code == 2
    line = _one_line_error(result)
    assert str(prompts) in line and "text" in line and "Fix:" in line
    assert not (tmp_path / "ws").exists()


def test_failed_run_leaves_an_existing_workspace_untouched(tmp_path):
    recipe = write_recipe(tmp_path / "ok.yaml")
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws), "--config", str(recipe)]).exit_code == 0
    head, files = git(ws, "rev-parse", "HEAD"), sorted(p.name for p in ws.rglob("*"))
    # a user edit that breaks the workspace recipe must fail fast, before any stage runs
    (ws / "flywheel.yaml").write_text((ws / "flywheel.yaml").read_text().replace("k: 2", "k: -1"))
    result = runner.invoke(app, ["run", "-w", str(ws)])
    assert result.exit_code == 2
    assert "generate.k" in _one_line_error(result)
    assert git(ws, "rev-parse", "HEAD") == head
    assert git(ws, "tag", "--list") == ""
    assert sorted(p.name for p in ws.rglob("*")) == files


def test_init_refuses_existing_workspace_and_non_empty_folder(tmp_path):
    recipe = write_recipe(tmp_path / "ok.yaml")
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws), "--config", str(recipe)]).exit_code == 0
    again = runner.invoke(app, ["init", str(ws), "--config", str(recipe)])
    assert again.exit_code == 2 and "already a flywheel workspace" in _one_line_error(again)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["init", str(other), "--config", str(recipe)])
    assert result.exit_code == 2 and "not empty" in _one_line_error(result)
    assert (other / "keep.txt").read_text() == "mine"


def test_status_on_a_folder_that_is_not_a_workspace(tmp_path):
    result = runner.invoke(app, ["status", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert "flywheel init" in _one_line_error(result)
