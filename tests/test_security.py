"""Model output is data, never code; ids and names cannot escape the workspace; secrets stay out."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from tasks.config.loading import recipe_from_dict
from tasks.errors import ConfigError
from tasks.verify.verifiers import ArithChainVerifier
from tasks.workspace.secrets import redact
from tests.conftest import ROOT, git, write_recipe

runner = CliRunner()


# The one sanctioned exec: the sandbox runner executes generated code inside the bubblewrap sandbox
# (verifier unit_tests); its text is passed to `python -c` there and it is never imported.
SANDBOX_CHILD = Path("tasks/verify/sandbox/child.py")


def test_no_eval_or_exec_anywhere_in_shipped_code():
    offenders = []
    for pkg in ("tasks", "flows", "flywheel"):
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in {"eval", "exec", "compile"}
                        and path.relative_to(ROOT) != SANDBOX_CHILD):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if _imports_sandbox_child(node):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports the sandbox child")
    assert offenders == []


def _imports_sandbox_child(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.endswith("sandbox.child") for a in node.names)
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        return module.endswith("sandbox.child") or (module.endswith("sandbox") and any(a.name == "child" for a in node.names))
    return False


def test_scoring_model_text_that_looks_like_code_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).write_text('x') Answer: 5"
    prompts = pl.DataFrame({"prompt_id": ["p"], "text": ["Mia has 3 pens. Then gets 2 more. How many pens now?"],
                            "answer": ["5"]})
    samples = pl.DataFrame({"prompt_id": ["p"], "sample_idx": [0], "text": [payload]})
    out = ArithChainVerifier().verify(samples, prompts)
    assert out["correct"].to_list() == [False]
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["../../etc", "0001/../../x", "1; rm -rf /", "12345"])
def test_iteration_ids_cannot_traverse_paths(bad, tmp_path):
    result = runner.invoke(app, ["stage", "generate", "--iteration", bad, "--workspace", str(tmp_path)])
    assert result.exit_code == 2 and "invalid iteration id" in result.stderr


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_run_names_cannot_traverse_paths(name):
    with pytest.raises(ConfigError, match="run.name"):
        recipe_from_dict({"run": {"name": name}})


def test_remote_with_embedded_credentials_is_refused_without_echoing_them(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {"remote.url": "https://alice:hunter2@dvc.example.com/store"})
    result = runner.invoke(app, ["init", str(tmp_path / "ws"), "--config", str(recipe)])
    assert result.exit_code == 2
    assert "credentials" in result.stderr and "hunter2" not in result.stderr and "alice" not in result.stderr
    assert not (tmp_path / "ws").exists()


def test_redact_masks_userinfo_tokens_and_hub_tokens():
    text = "s3://AKIA:SECRET@bucket/x https://h/p?token=abc&x=1 hf_" + "a" * 30
    out = redact(text)
    assert "SECRET" not in out and "abc" not in out and "a" * 30 not in out
    assert out.startswith("s3://***@bucket/x")


def test_missing_remote_of_an_existing_workspace_is_caught_before_compute(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml")
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(ws), "--config", str(recipe)]).exit_code == 0
    head = git(ws, "rev-parse", "HEAD")
    shutil.rmtree(tmp_path / "ws-remote")
    result = runner.invoke(app, ["run", "-w", str(ws)])
    assert result.exit_code == 2
    assert "remote" in result.stderr and "does not exist" in result.stderr and "Fix:" in result.stderr
    assert git(ws, "rev-parse", "HEAD") == head and git(ws, "tag", "--list") == ""


def test_hub_token_never_reaches_logs_records_or_history(tmp_path):
    token = "hf_" + "Z" * 34
    recipe = write_recipe(tmp_path / "r.yaml", {"run.iterations": 1})
    env = {**os.environ, "HF_TOKEN": token, "HUGGING_FACE_HUB_TOKEN": token}
    ws = tmp_path / "ws"
    proc = subprocess.run([sys.executable, "-m", "flywheel", "run", "-w", str(ws), "-c", str(recipe)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert token not in proc.stdout + proc.stderr
    for path in ws.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert token.encode() not in path.read_bytes(), path
    assert token not in git(ws, "log", "-p", "--all")
    assert Path(ws / "records/0001.json").is_file()
