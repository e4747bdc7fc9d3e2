"""Run one dispatched stage on a worker machine (the worker side of `tasks.placement.dispatch`).

In an empty folder: rebuild a workspace skeleton (git + DVC with the orchestrator's remote and the
small text files it sent), pull the stage's deps and check their bytes against the hashes the
orchestrator recorded, run the real stage with `dvc repro`, then push the outputs and the
run-cache entry. Remote credentials come from the worker's own environment or DVC config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from tasks.placement.dispatch import DispatchError, DispatchRequest, WorkerReport, mismatches, read_lock
from tasks.workspace.provenance import code_revision, compute_device, package_versions
from tasks.workspace.secrets import redact
from tasks.workspace.versioning import _repo, init_repos, stage_target

PROTECTED = {".git", ".dvc"}  # a request never writes repository internals


def safe_relpath(rel: str) -> PurePosixPath:
    """A workspace-relative path from a request, refusing absolute paths, `..` and repo internals."""
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or ".." in path.parts or "\\" in rel or path.parts[0] in PROTECTED:
        raise DispatchError(f"the request names an unsafe path {rel!r}.", field="files",
                            fix="send workspace-relative paths only.")
    return path


def write_skeleton(root: Path, request: DispatchRequest) -> None:
    """git + DVC repo with the orchestrator's remote, and the request's text files."""
    paths = {safe_relpath(rel): text for rel, text in request.files.items()}
    for rel in [*request.deps, *request.pull]:
        safe_relpath(rel)
    root.mkdir(parents=True, exist_ok=True)
    init_repos(root, request.remote_url)
    for rel, text in paths.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


@contextmanager
def _own_bin_on_path() -> Iterator[None]:
    """dvc.yaml's commands call `flywheel`: make it the one installed beside this interpreter."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


def run_request(request: DispatchRequest, workdir: Path) -> WorkerReport:
    """Pull, check, run and push one stage; return its dvc.lock entry."""
    from dvc.exceptions import DvcException

    root = Path(workdir) / "workspace"
    name = request.name
    write_skeleton(root, request)
    try:
        with _repo(root) as repo:
            repo.pull(targets=[str(root / p) for p in request.pull])
    except DvcException as err:
        raise DispatchError(f"{name}: pulling its inputs from {redact(request.remote_url)} failed: "
                            f"{redact(str(err))}.", fix="check the worker's remote credentials and that the "
                            "orchestrator pushed them.") from None
    bad = mismatches(root, request.deps)
    if bad:
        raise DispatchError(f"{name}: inputs pulled on the worker do not match the recorded hashes "
                            f"({'; '.join(bad)}).", fix="the remote copy is corrupt; nothing was run.")
    try:
        with _own_bin_on_path(), _repo(root) as repo:
            repo.reproduce(stage_target(root, name), single_item=True)
    except DvcException as err:
        raise DispatchError(f"{name}: the stage failed on the worker: {redact(str(err))}.",
                            fix="see the worker flow run's logs.") from None
    lock = read_lock(root).get(name)
    if lock is None:
        raise DispatchError(f"{name}: dvc repro recorded no lock entry on the worker.", fix="see the worker logs.")
    outs = {o["path"]: o["md5"] for o in lock.get("outs", [])}
    bad = mismatches(root, outs)
    if bad:
        raise DispatchError(f"{name}: outputs on the worker do not match dvc.lock ({'; '.join(bad)}).",
                            fix="see the worker logs.")
    try:
        with _repo(root) as repo:
            repo.push(targets=[stage_target(root, name)], run_cache=True)
    except DvcException as err:
        raise DispatchError(f"{name}: pushing outputs to {redact(request.remote_url)} failed: {redact(str(err))}.",
                            fix="check the worker's remote credentials.") from None
    return WorkerReport(stage=name, lock=lock, device=compute_device(), packages=package_versions(),
                        code=code_revision())
