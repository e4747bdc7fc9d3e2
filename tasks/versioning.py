"""Git and DVC operations on a workspace. DVC holds a repo-wide lock: call these one at a time."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path

from tasks.errors import WorkspaceError

GIT_ENV = {"GIT_AUTHOR_NAME": "flywheel", "GIT_AUTHOR_EMAIL": "flywheel@localhost",
           "GIT_COMMITTER_NAME": "flywheel", "GIT_COMMITTER_EMAIL": "flywheel@localhost"}


def git(root: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in GIT_ENV.items()}}
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env)
    if check and proc.returncode:
        raise WorkspaceError(f"git {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}",
                             file=str(root))
    return proc.stdout.strip()


@contextmanager
def _repo(root: Path) -> Iterator:
    """Open the workspace's DVC repo with the working directory at its root, as DVC expects."""
    import logging

    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)  # per-stage "Updating lock file" is noise here
    with chdir(root), Repo(str(root)) as repo:
        yield repo


def init_repos(root: Path, remote_url: str) -> None:
    """git init + dvc init, autostage on, analytics off, a default remote."""
    from dvc.repo import Repo

    git(root, "init", "-q", "-b", "main")
    repo = Repo.init(str(root))
    with repo.config.edit() as conf:
        conf["core"]["autostage"] = True
        conf["core"]["analytics"] = False
        conf["core"]["remote"] = "origin"
        conf["remote"]["origin"] = {"url": remote_url}
    repo.close()


def stage_target(root: Path, stage: str) -> str:
    """An absolute `dvc.yaml:stage` target, independent of the current directory."""
    return f"{Path(root) / 'dvc.yaml'}:{stage}"


def commit_stage(root: Path, stage: str) -> None:
    """Record a stage's deps, params and outs hashes in dvc.lock and its outs in the cache."""
    with _repo(root) as repo:
        repo.commit(stage_target(root, stage), force=True)


def stage_is_current(root: Path, stage: str) -> bool:
    """True when dvc.lock has the stage and its deps, params and outs all match it."""
    import yaml

    lock = Path(root) / "dvc.lock"
    if not lock.is_file() or stage not in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}):
        return False
    with _repo(root) as repo:
        return not repo.status(targets=[stage_target(root, stage)])


def push(root: Path) -> None:
    with _repo(root) as repo:
        repo.push()


def remote_url(root: Path) -> str | None:
    with _repo(root) as repo:
        name = repo.config["core"].get("remote")
        return repo.config["remote"].get(name, {}).get("url") if name else None


def commit_and_tag(root: Path, message: str, tag: str | None = None) -> str:
    git(root, "add", "-A")
    if git(root, "status", "--porcelain"):
        git(root, "commit", "-q", "-m", message)
    if tag:
        git(root, "tag", "-f", tag)
    return git(root, "rev-parse", "HEAD")


def tags(root: Path) -> list[str]:
    return [t for t in git(root, "tag", "--list", "iter-*").splitlines() if t]
