"""Workspaces: git + DVC repos where iterations are recorded, and the one-run-at-a-time lock."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.atomic import write_json, write_text
from tasks.config import Recipe
from tasks.errors import WorkspaceBusyError, WorkspaceError
from tasks.layout import Layout
from tasks.numerics import resolve as resolve_numerics
from tasks.pipeline import write_iteration_vars
from tasks.provenance import CODE_ROOT, code_revision, package_versions
from tasks.recipe import write_recipe
from tasks.versioning import commit_and_tag, init_repos

DEFAULT_WORKSPACE = CODE_ROOT / "data" / "workspaces" / "default"
DEFAULT_CONFIG = CODE_ROOT / "configs" / "tiny-arith.yaml"
PIPELINE_TEMPLATE = CODE_ROOT / "dvc.yaml"
WORKSPACE_GITIGNORE = ".flywheel/\nreports/\n"


def default_remote(root: Path) -> str:
    return str(root.resolve().parent / f"{root.name}-remote")


def is_workspace(root: Path) -> bool:
    return (root / "flywheel.yaml").is_file() and (root / ".dvc").is_dir() and (root / ".git").exists()


def init_workspace(root: Path, recipe: Recipe) -> Layout:
    """Create the workspace: its own git + DVC repo, the pipeline, the resolved recipe, a local remote.

    Everything is validated before anything is written; a half-made workspace is removed."""
    root = Path(root)
    if is_workspace(root):
        raise WorkspaceError("already a flywheel workspace.", file=str(root),
                             fix="use `flywheel run --workspace` on it, or pick a new folder.")
    if root.exists() and any(root.iterdir()):
        raise WorkspaceError("folder exists and is not empty.", file=str(root), fix="pick a new or empty folder.")
    if _inside_git_repo(root.parent) and not _ignored_by_parent(root):
        raise WorkspaceError("folder lies inside another git repository's tracked tree.", file=str(root),
                             fix="create workspaces outside code repos, or git-ignore the folder first.")
    remote = recipe.remote.url or default_remote(root)
    recipe = resolve_backend(recipe)
    recipe = recipe.model_copy(update={"numerics": resolve_numerics(recipe.numerics)})  # 'auto' -> cores
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        layout = Layout(root.resolve())
        init_repos(layout.root, remote)
        if "://" not in remote:
            Path(remote).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PIPELINE_TEMPLATE, layout.root / "dvc.yaml")
        write_recipe(recipe, layout.recipe)
        write_iteration_vars(layout, {})
        write_text(layout.root / ".gitignore", WORKSPACE_GITIGNORE)
        write_json(layout.records / "workspace.json", {"code": code_revision(), "packages": package_versions()})
        commit_and_tag(layout.root, f"Initialise workspace {recipe.run.name}")
    except BaseException:
        if created:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return layout


def resolve_backend(recipe: Recipe) -> Recipe:
    """Record the concrete generation backend, so a later re-run or reproduction on a machine
    without vLLM fails clearly instead of silently sampling with another engine."""
    from tasks.backends.base import resolve_backend_name

    chosen = resolve_backend_name(recipe.generate.backend)
    return recipe.model_copy(update={"generate": recipe.generate.model_copy(update={"backend": chosen})})


def open_workspace(root: Path) -> Layout:
    if not is_workspace(Path(root)):
        raise WorkspaceError("not a flywheel workspace.", file=str(root),
                             fix="create one with `flywheel init DIR --config configs/tiny-arith.yaml`.")
    return Layout(Path(root).resolve())


def _inside_git_repo(path: Path) -> bool:
    for p in [path.resolve(), *path.resolve().parents]:
        if (p / ".git").exists():
            return True
    return False


def _ignored_by_parent(root: Path) -> bool:
    import subprocess

    parent = root.resolve().parent
    while not parent.exists():
        parent = parent.parent
    proc = subprocess.run(["git", "check-ignore", "-q", str(root.resolve())], cwd=parent, capture_output=True)
    return proc.returncode == 0


@contextmanager
def workspace_lock(layout: Layout) -> Iterator[None]:
    """One run per workspace. The kernel drops the lock when its process dies, so a lock left by a
    killed run is never stale: the next run simply acquires it."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise WorkspaceBusyError(f"another flywheel run (pid {holder}) is using this workspace.",
                                     file=str(layout.root), fix="wait for it to finish; runs never share a workspace.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
