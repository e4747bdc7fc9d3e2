"""Workspaces, recipes and prompt files in folders named with spaces and non-ASCII letters work under
a C/POSIX locale as well as under UTF-8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, git, write_recipe

LOCALES = {"C": {"LC_ALL": "C", "LANG": "C"}, "POSIX": {"LC_ALL": "POSIX", "LANG": "POSIX"},
           "C.UTF-8": {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}}
ROWS = [{"text": f"Q{i}: wie viel ist {i}+{i}? (größe {i}, naïve)", "answer": str(2 * i), "split": s,
         "target": f"{i}+{i}={2 * i}. Answer: {2 * i}" if s == "seed" else None}
        for i, s in enumerate(["seed"] * 4 + ["train"] * 8 + ["probe"] * 2 + ["test"] * 4)]


def _env(locale: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k not in ("LANG", "PYTHONUTF8")}
    return {**env, **LOCALES[locale]}


def _flywheel(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flywheel", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout, encoding="utf-8", errors="replace")


@pytest.mark.parametrize("locale", sorted(LOCALES))
def test_init_in_non_ascii_folders_with_spaces(tmp_path, locale):
    base = tmp_path / "mes dossiers ü"
    (base / "données é").mkdir(parents=True)
    (base / "récipes ø").mkdir()
    prompts = base / "données é" / "prompts ß.jsonl"
    prompts.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    recipe = write_recipe(base / "récipes ø" / "recette ü.yaml", {
        "prompts.source": {"type": "file", "path": str(prompts), "target_column": "target"},
        "pool.difficulty_schedule": None})
    ws = base / "my wörk späce ü"
    env = _env(locale)
    proc = _flywheel(env, "init", str(ws), "-c", str(recipe))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "'" + str(ws) + "'" in proc.stdout  # the hint to copy is quoted
    config = (ws / ".dvc" / "config").read_text(encoding="utf-8")
    assert f"{ws}-remote" in config
    assert git(ws, "status", "--porcelain") == ""
    # DVC itself, under the same locale, reads the config back
    dvc = subprocess.run([sys.executable, "-m", "dvc", "config", "remote.origin.url"], cwd=ws, capture_output=True, text=True,
                         env=env, encoding="utf-8", errors="replace", timeout=120)
    assert dvc.returncode == 0 and f"{ws}-remote" in dvc.stdout, dvc.stderr[-2000:]
    assert (Path(f"{ws}-remote")).is_dir()


@pytest.mark.slow
def test_a_run_in_a_non_ascii_workspace_under_the_c_locale(tmp_path):
    ws = tmp_path / "my wörk späce ü"
    recipe = write_recipe(tmp_path / "récipe ü.yaml", {"run.iterations": 1})
    proc = _flywheel(_env("C"), "run", "-w", str(ws), "-c", str(recipe), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (ws / "records" / "0001.json").is_file()
    assert git(ws, "status", "--porcelain") == "" and git(ws, "tag", "--list")
