"""Workspaces: git + DVC repos where iterations are recorded, which one a command acts on, and the
one-run-at-a-time lock.

This module is imported before any refusal (busy, wrong folder, no data), so everything heavy
(the recipe models, polars, DVC) is imported inside the functions that need it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.errors import WorkspaceBusyError, WorkspaceError
from tasks.workspace.layout import Layout
from tasks.workspace.provenance import CODE_ROOT

if TYPE_CHECKING:
    from tasks.config.recipe import Recipe

DEFAULT_WORKSPACE = CODE_ROOT / "data" / "workspaces" / "default"
DEFAULT_CONFIG = CODE_ROOT / "configs" / "tiny-arith.yaml"
PIPELINE_TEMPLATE = CODE_ROOT / "dvc.yaml"
WORKSPACE_GITIGNORE = ".flywheel/\nreports/\n"  # .flywheel/ holds the run lock, run logs, checkpoints
ENV_VAR = "FLYWHEEL_WORKSPACE"
# What every complete workspace has; a folder holding flywheel.yaml and one of the MARKERS but not
# all of these is a damaged or partial copy, and is refused rather than passed over.
REQUIRED = ((".git", "its git history"), (".dvc", "its DVC folder"), ("dvc.yaml", "the pipeline"),
            ("flywheel.yaml", "the recipe"))
MARKERS = ("iterations.yaml", "records/workspace.json")


def default_remote(root: Path) -> str:
    return str(root.resolve().parent / f"{root.name}-remote")


def is_workspace(root: Path) -> bool:
    return (root / "flywheel.yaml").is_file() and (root / ".dvc").is_dir() and (root / ".git").exists()


def looks_like_workspace(root: Path) -> bool:
    """A folder flywheel made (complete or not): its recipe beside a file only flywheel writes."""
    root = Path(root)
    return is_workspace(root) or ((root / "flywheel.yaml").is_file() and any((root / m).is_file() for m in MARKERS))


def workspace_problem(root: Path) -> str | None:
    """What a folder that looks like a workspace lacks, in words (None when nothing is missing)."""
    root = Path(root)
    gone = [f"{name} ({what})" for name, what in REQUIRED
            if not ((root / name).exists() if name == ".git" else
                    (root / name).is_dir() if name == ".dvc" else (root / name).is_file())]
    return ", ".join(gone) or None


def _incomplete(root: Path, problem: str) -> WorkspaceError:
    return WorkspaceError(f"this folder looks like a flywheel workspace but is not complete: no {problem}.",
                          file=str(root), fix="copy a workspace whole (with .git and .dvc), or `git clone` "
                          "the original and run `dvc pull` in the clone.")


def find_enclosing_workspace(start: Path) -> Path | None:
    """The nearest folder at or above `start` that flywheel made, walking up as git does. The walk
    stops at the first git repository that is not a workspace (a code repo, say): a workspace is
    always the root of its own git repository."""
    start = Path(start).absolute()
    for folder in (start, *start.parents):
        if looks_like_workspace(folder):
            return folder
        if (folder / ".git").exists():
            return None
    return None


@dataclass(frozen=True)
class Target:
    """The workspace a command acts on, and how it was chosen: `option` (-w), `env`
    (FLYWHEEL_WORKSPACE), `dvc` (the repo `dvc repro` runs a stage in), `cwd` (the workspace the
    current folder lies in) or `default` (the code repo's default workspace)."""

    root: Path
    source: str

    @property
    def explicit(self) -> bool:
        return self.source in ("option", "dvc")


def resolve_target(option: Path | None, *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
                   under_dvc: bool = False) -> Target:
    """Which workspace a command means: -w, then FLYWHEEL_WORKSPACE, then the workspace the current
    folder lies in, then the default one. `under_dvc` (for `flywheel stage`) puts the repo DVC runs
    the stage for (DVC_ROOT) right after -w. Nothing is checked or created here."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else Path(cwd)
    if option is not None:
        return Target(_absolute(Path(option), cwd), "option")
    if under_dvc and env.get("DVC_STAGE") and env.get("DVC_ROOT"):
        return Target(_absolute(Path(env["DVC_ROOT"]), cwd), "dvc")
    if env.get(ENV_VAR):
        return Target(_absolute(Path(env[ENV_VAR]).expanduser(), cwd), "env")
    found = find_enclosing_workspace(cwd)
    if found is not None:
        return Target(found, "cwd")
    return Target(DEFAULT_WORKSPACE, "default")


def _absolute(path: Path, cwd: Path) -> Path:
    return path if path.is_absolute() else cwd / path


def check_workspace(root: Path) -> Path:
    """`root` as a complete workspace (resolved), or a one-line error saying what is wrong and the fix."""
    root = Path(root)
    if looks_like_workspace(root):
        problem = workspace_problem(root)
        if problem is None:
            return root.resolve()
        raise _incomplete(root, problem)
    enclosing = find_enclosing_workspace(root.parent) if root.parent != root else None
    if enclosing is not None:
        raise WorkspaceError(f"not a flywheel workspace; it lies inside the workspace {enclosing}.", file=str(root),
                             fix=f"pass -w {enclosing}, or run the command from anywhere inside it without -w.")
    if not root.exists():
        raise WorkspaceError("no such folder.", file=str(root),
                             fix="check the path, or create a workspace with `flywheel init DIR --config RECIPE`.")
    raise WorkspaceError("not a flywheel workspace.", file=str(root),
                         fix="create one with `flywheel init DIR --config configs/tiny-arith.yaml`.")


def open_workspace(root: Path) -> Layout:
    return Layout(check_workspace(Path(root)))


# --- what of the recorded data is here ----------------------------------------------------------

@dataclass(frozen=True)
class DataState:
    """The DVC outputs recorded in the last commit's dvc.lock (git-tracked ones left out: a clone
    always has those), and those of them that are not in the workspace."""

    recorded: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def none_here(self) -> bool:
        """Data is recorded but none of it is here: a clone before `dvc pull`."""
        return bool(self.recorded) and len(self.missing) == len(self.recorded)

    def summary(self, most: int = 3) -> str:
        shown = ", ".join(self.missing[:most]) + (", ..." if len(self.missing) > most else "")
        return f"{len(self.missing)} of {len(self.recorded)} recorded data outputs are not here ({shown})"


def data_state(root: Path) -> DataState:
    """Compare `git show HEAD:dvc.lock` with the files present. HEAD, not the working tree: an
    interrupted iteration's outputs may be half-replaced until the next run repairs them."""
    import yaml

    root = Path(root)
    proc = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        return DataState((), ())  # no commit yet, or nothing recorded
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    stages = (yaml.load(proc.stdout, Loader=loader) or {}).get("stages") or {}
    outs = sorted({o["path"] for s in stages.values() for o in s.get("outs") or [] if o.get("path")})
    tracked = subprocess.run(["git", "ls-files", "-z", "--", *outs], cwd=root, capture_output=True,
                             text=True).stdout.split("\0") if outs else []
    recorded = tuple(p for p in outs if p not in set(tracked))  # `cache: false` outputs live in git
    return DataState(recorded, tuple(p for p in recorded if not (root / p).exists()))


NO_DATA_FIX = "`dvc pull`, run inside the workspace, fetches the recorded files from its DVC remote."


def require_data(root: Path, *, complete: bool) -> DataState:
    """Refuse a clone that has no data yet; with `complete`, refuse any missing recorded output."""
    state = data_state(root)
    if state.none_here:
        raise WorkspaceError("this clone has no data yet: run `dvc pull`.", file=str(root), fix=NO_DATA_FIX)
    if complete and state.missing:
        raise WorkspaceError(f"{state.summary()}: run `dvc pull`.", file=str(root), fix=NO_DATA_FIX)
    return state


# --- creating one -------------------------------------------------------------------------------

def init_workspace(root: Path, recipe: Recipe) -> Layout:
    """Create the workspace: its own git + DVC repo, the pipeline, the resolved recipe, a local remote.

    Everything is validated before anything is written; a half-made workspace is removed."""
    from tasks.config.recipe import freeze_fidelity
    from tasks.numerics.state import resolve as resolve_numerics

    root = Path(root)
    if is_workspace(root):
        raise WorkspaceError("already a flywheel workspace.", file=str(root),
                             fix="use `flywheel run --workspace` on it, or pick a new folder.")
    if _in_use(root):
        _refuse_if_being_created(root)
        raise WorkspaceError("folder exists and is not empty.", file=str(root), fix="pick a new or empty folder.")
    if _inside_git_repo(root.parent) and not _ignored_by_parent(root):
        raise WorkspaceError("folder lies inside another git repository's tracked tree.", file=str(root),
                             fix="create workspaces outside code repos, or git-ignore the folder first.")
    remote = recipe.remote.url or default_remote(root)
    recipe = resolve_backend(recipe)
    recipe = recipe.model_copy(update={"numerics": resolve_numerics(recipe.numerics)})  # 'auto' -> cores
    recipe = freeze_fidelity(recipe)
    recipe = _record_gguf_hash(recipe)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    # Two commands creating one workspace at once: the second is refused (exit 3) and never removes
    # the folder the first is filling.
    with workspace_lock(Layout(root.resolve())):
        if is_workspace(root) or _in_use(root):
            raise WorkspaceBusyError("another flywheel command created this workspace just now.", file=str(root),
                                     fix="run your command again: it will use the new workspace.")
        return _create(root, recipe, remote, created)


def _record_gguf_hash(recipe: Recipe) -> Recipe:
    """A GGUF starting point is pinned by its bytes: the hash goes into the workspace's recipe, so
    the `base` stage's params change (and DVC re-runs it) if the file ever does."""
    from tasks.config.recipe import GGUFInit

    init = recipe.model.init
    if not isinstance(init, GGUFInit) or init.sha256 is not None:
        return recipe
    from tasks.models.gguf_import import file_sha256, resolve_gguf

    init = init.model_copy(update={"sha256": file_sha256(resolve_gguf(init.path)[0])})
    return recipe.model_copy(update={"model": recipe.model.model_copy(update={"init": init})})


def _in_use(root: Path) -> bool:
    """Whether the folder holds anything but our state folder (which taking the lock creates)."""
    return root.exists() and any(p.name != ".flywheel" for p in root.iterdir())


def _refuse_if_being_created(root: Path) -> None:
    """A workspace another command is creating right now holds the lock: say so (exit 3)."""
    if (Layout(root).lock).is_file():
        with workspace_lock(Layout(root.resolve())):
            pass


def _create(root: Path, recipe: Recipe, remote: str, created: bool) -> Layout:
    from tasks.config.loading import write_recipe
    from tasks.pipeline import write_iteration_vars
    from tasks.workspace.atomic import write_json, write_text
    from tasks.workspace.provenance import code_revision, package_versions
    from tasks.workspace.versioning import commit_and_tag, init_repos

    try:
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
    from tasks.models.backends.base import resolve_backend_name

    chosen = resolve_backend_name(recipe.generate.backend)
    return recipe.model_copy(update={"generate": recipe.generate.model_copy(update={"backend": chosen})})


def _inside_git_repo(path: Path) -> bool:
    for p in [path.resolve(), *path.resolve().parents]:
        if (p / ".git").exists():
            return True
    return False


def _ignored_by_parent(root: Path) -> bool:
    parent = root.resolve().parent
    while not parent.exists():
        parent = parent.parent
    proc = subprocess.run(["git", "check-ignore", "-q", str(root.resolve())], cwd=parent, capture_output=True)
    return proc.returncode == 0


# --- the run lock --------------------------------------------------------------------------------

# Locks this process holds: lock file (real path) -> [pid, fd, depth]. flock(2) locks belong to an
# open file description, so a second os.open of the same file in this process would be refused by
# our own lock; re-entering goes through this table instead. The pid makes a forked child, which
# inherits the table but is another process, take the lock itself (and be refused).
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def workspace_lock(layout: Layout) -> Iterator[None]:
    """One run per workspace. The kernel drops the lock when its process dies, so a lock left by a
    killed run is never stale: the next run simply acquires it.

    Re-entrant within a process: the CLI takes the lock before Prefect starts, and the nightly flow
    takes it again (a no-op then) so that a run started by a deployment or `serve` holds it too."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(layout.lock)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None and held[0] == os.getpid():
            held[2] += 1
        else:
            _HELD[key] = [os.getpid(), _acquire(layout), 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            held = _HELD[key]
            held[2] -= 1
            if held[2] == 0:
                del _HELD[key]
                os.close(held[1])


def holds_lock(layout: Layout) -> bool:
    """Whether this process holds the workspace's run lock."""
    held = _HELD.get(os.path.realpath(layout.lock))
    return held is not None and held[0] == os.getpid()


def _acquire(layout: Layout) -> int:
    fd = os.open(layout.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise WorkspaceBusyError(f"another flywheel run (pid {holder}) is using this workspace.",
                                 file=str(layout.root), fix="wait for it to finish; runs never share a workspace.") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
