"""Run one stage on a remote worker through the DVC remote and run-cache (orchestrator side).

The protocol, for `train@NNNN` (or `generate@NNNN`):
1. `build_request` names the stage's deps with the hashes dvc.lock records for them, and carries
   the small text files a worker needs to rebuild the workspace skeleton (dvc.yaml, the lock
   entries of the producing stages, iterations.yaml, the recipe and params, uncached deps such as
   gate.json). `push_inputs` pushes the cached deps to the DVC remote.
2. The worker (`tasks.placement.dispatch_worker`) pulls and checks the deps, runs `dvc repro` of the stage,
   pushes the outputs and its run-cache entry, and reports the stage's lock entry.
3. `collect_outputs` fetches the run-cache, lets DVC restore the outputs without running anything,
   and re-hashes the restored bytes. Only when they equal the worker's report may the caller
   record the stage (dvc commit); any mismatch removes what was restored and raises.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tasks.errors import WorkspaceError
from tasks.pipeline import dvc_stage_name
from tasks.workspace.layout import Layout
from tasks.workspace.secrets import has_credentials, redact
from tasks.workspace.versioning import _repo, stage_target

INLINE_LIMIT = 1 << 20  # uncached deps travel inside the request; they are small JSON files


class DispatchError(WorkspaceError):
    """A dispatched stage could not be run, or its outputs did not verify; nothing was recorded."""

    exit_code = 5


class DispatchRequest(BaseModel):
    """Everything a worker needs to run one stage: no data, only hashes, small text files and the remote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = Field(description="stage name in dvc.yaml, e.g. train")
    iteration: str = Field(pattern=r"^[0-9]{4}$")
    remote_url: str = Field(description="the workspace's DVC remote; credentials stay on the worker")
    files: dict[str, str] = Field(description="workspace-relative path -> text to write in the skeleton")
    deps: dict[str, str] = Field(description="dep path -> md5 recorded in the orchestrator's dvc.lock")
    pull: list[str] = Field(description="cached dep paths to pull from the remote")

    @property
    def name(self) -> str:
        return dvc_stage_name(self.stage, self.iteration)


class RunCacheMiss(DispatchError):
    """The remote holds no run of this stage on these inputs (the normal case before dispatching)."""


class WorkerReport(BaseModel):
    """What the worker ran and produced: its dvc.lock entry for the stage, and where it ran."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    lock: dict = Field(description="the stage's dvc.lock entry on the worker (cmd, deps, params, outs)")
    device: str
    packages: dict[str, str]
    code: dict

    def outs(self) -> dict[str, str]:
        return {o["path"]: o["md5"] for o in self.lock.get("outs", [])}

    def deps(self) -> dict[str, str]:
        return {d["path"]: d["md5"] for d in self.lock.get("deps", [])}


def content_md5(path: Path) -> str:
    """DVC's md5 of a file or folder (`<md5>.dir`), computed from the bytes on disk.

    DVC's own state database would answer from inode and mtime, which a tampered or half-copied
    file can keep; this reads every byte."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        _, _, obj = build(HashFileDB(fs, tmp), str(path), fs, "md5", dry_run=True)
    return obj.hash_info.value


def mismatches(root: Path, expected: dict[str, str]) -> list[str]:
    """'path: expected X, found Y' for every path whose bytes do not hash as expected."""
    out = []
    for rel, md5 in sorted(expected.items()):
        path = Path(root) / rel
        found = content_md5(path) if path.exists() else "missing"
        if found != md5:
            out.append(f"{rel}: expected {md5}, found {found}")
    return out


def read_lock(root: Path) -> dict[str, dict]:
    lock = Path(root) / "dvc.lock"
    return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.is_file() else {}


def resolved_remote(root: Path) -> str:
    """The workspace's remote as a URL a worker can use: local paths made absolute, never credentials."""
    from tasks.workspace.versioning import remote_url

    url = remote_url(root)
    if not url:
        raise DispatchError("the workspace has no DVC remote.", file=str(root),
                            fix="add one: `dvc remote add -d origin URL` inside the workspace.")
    if has_credentials(url):
        raise DispatchError(f"the remote {redact(url)} embeds credentials, which would be sent to the worker.",
                            file=str(root), field="remote origin",
                            fix="keep credentials in the worker's environment or DVC config, not in the URL.")
    if "://" not in url and not Path(url).expanduser().is_absolute():
        url = str((Path(root) / ".dvc" / url).resolve())  # DVC resolves relative remotes from .dvc/
    return url


def build_request(layout: Layout, stage: str, it: str) -> DispatchRequest:
    """The request for one stage: its deps' recorded hashes and the skeleton's text files."""
    from dvc.dependency.param import ParamsDependency

    name = dvc_stage_name(stage, it)
    root = layout.root
    with _repo(root) as repo:
        (st,) = repo.stage.collect(stage_target(root, name))
        deps = [d.def_path for d in st.deps if not isinstance(d, ParamsDependency)]
        producers = {o.def_path: (o.stage.addressing, o.use_cache) for o in repo.index.outs}
    lock = read_lock(root)
    recorded, entries, pull, files = {}, {}, [], {}
    for dep in deps:
        if dep not in producers or producers[dep][0] not in lock:
            raise DispatchError(f"{name}: its input {dep} has no hash in dvc.lock.", file=str(root / "dvc.lock"),
                                fix="run the stages before it first (the iteration flow does this).")
        producer, cached = producers[dep]
        entries[producer] = lock[producer]
        recorded[dep] = next(o["md5"] for o in lock[producer]["outs"] if o["path"] == dep)
        if cached:
            pull.append(dep)
        else:
            files[dep] = _small_text(root / dep)
    for rel in ("dvc.yaml", layout.rel(layout.iterations_vars), layout.rel(layout.recipe), layout.rel(layout.params(it))):
        files[rel] = _small_text(root / rel)
    files["dvc.lock"] = yaml.safe_dump({"schema": "2.0", "stages": entries}, sort_keys=False)
    return DispatchRequest(stage=stage, iteration=it, remote_url=resolved_remote(root), files=files,
                           deps=recorded, pull=sorted(pull))


def _small_text(path: Path) -> str:
    if path.stat().st_size > INLINE_LIMIT:
        raise DispatchError(f"{path.name} is too large to send to a worker inline.", file=str(path),
                            fix="declare it as a cached DVC output so the worker pulls it from the remote.")
    return path.read_text(encoding="utf-8")


def push_inputs(layout: Layout, request: DispatchRequest) -> None:
    """Push the stage's cached deps, so the worker can pull them (the iteration is not committed yet)."""
    with _repo(layout.root) as repo:
        repo.push(targets=[str(layout.root / p) for p in request.pull])


def check_report(request: DispatchRequest, report: WorkerReport) -> None:
    """The worker ran the requested stage on exactly the inputs the orchestrator recorded."""
    if report.stage != request.name:
        raise DispatchError(f"the worker reported stage {report.stage}, not {request.name}.",
                            fix="check that the deployment runs the flywheel stage worker flow.")
    wrong = [f"{p}: sent {h}, worker used {report.deps().get(p, 'nothing')}"
             for p, h in sorted(request.deps.items()) if report.deps().get(p) != h]
    if wrong:
        raise DispatchError(f"{request.name}: the worker ran on other inputs ({'; '.join(wrong)}).",
                            fix="re-run the iteration; nothing was recorded.")
    if not report.outs():
        raise DispatchError(f"{request.name}: the worker reported no outputs.", fix="check the worker's logs.")


def collect_outputs(layout: Layout, name: str, expected: dict[str, str] | None) -> dict[str, str]:
    """Restore a stage's outputs from the remote run-cache and check their bytes.

    `expected` is the worker's report (out path -> md5); with None, the run-cache entry itself is
    the expectation (resuming after the orchestrator stopped while the worker finished). Never runs
    the stage: a missing entry or object is an error. On any mismatch the restored outputs are
    removed, so nothing unverified can be committed."""
    from dvc.exceptions import DvcException
    from dvc.repo import lock_repo
    from dvc.stage.cache import RunCacheNotFoundError

    root = layout.root
    with _repo(root) as repo, lock_repo(repo):  # restore() checks out outputs: it needs DVC's repo lock
        (st,) = repo.stage.collect(stage_target(root, name))
        outs = [o.def_path for o in st.outs]
        try:
            repo.stage_cache.pull(None)  # run entries are small YAML files; objects come next, for this stage only
            repo.stage_cache.restore(st, pull=True)
        except RunCacheNotFoundError:
            _remove(root, outs)
            raise RunCacheMiss(f"{name}: the DVC remote has no run-cache entry (or not all output objects) for "
                                "these inputs.", file=str(root), fix="check that the worker pushed with "
                                "`--run-cache` to the same remote; nothing was recorded.") from None
        except DvcException as err:
            _remove(root, outs)
            raise DispatchError(f"{name}: restoring outputs from the remote failed: {redact(str(err))}.",
                                file=str(root), fix="check the remote and retry; nothing was recorded.") from None
        entry = repo.stage_cache._load(st)  # the entry restore() just used (newest for this key)
        cache_path = repo.cache.local.oid_to_path
    cached = {o["path"]: o["md5"] for o in (entry or {}).get("outs", [])}
    if expected is not None and cached != expected:
        _remove(root, outs)
        raise DispatchError(f"{name}: the run-cache entry on the remote ({cached}) differs from the worker's "
                            f"report ({expected}).", file=str(root), fix="re-run the iteration; nothing was recorded.")
    bad = mismatches(root, cached)
    if bad:
        _remove(root, outs)
        _drop_corrupt_objects(cached, cache_path)
        raise DispatchError(f"{name}: restored outputs do not match their hashes ({'; '.join(bad)}).",
                            file=str(root), fix="the remote copy is corrupt or incomplete; re-run the iteration. "
                                                "Nothing was recorded.")
    return cached


def _remove(root: Path, outs: list[str]) -> None:
    for rel in outs:
        path = Path(root) / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _drop_corrupt_objects(outs: dict[str, str], cache_path) -> None:
    """Delete corrupt objects of these outputs from the local cache, so a retry fetches them again."""
    for md5 in outs.values():
        top = Path(cache_path(md5))
        if not top.is_file():
            continue
        if not md5.endswith(".dir"):
            if content_md5(top) != md5:
                top.unlink()
            continue
        for entry in json.loads(top.read_text()):
            obj = Path(cache_path(entry["md5"]))
            if obj.is_file() and content_md5(obj) != entry["md5"]:
                obj.unlink()
        top.unlink()  # the listing is small; fetch it again with the objects


DISPATCHABLE = ("train", "generate")


def stage_dispatch(layout: Layout, stage: str, it: str | None):
    """The iteration's `dispatch.<stage>` setting (a StageDispatch), or None to run the stage here."""
    if it is None or stage not in DISPATCHABLE:
        return None
    from tasks.pipeline import stage_recipe

    return getattr(stage_recipe(layout, it).dispatch, stage)


def dispatched_device(layout: Layout, it: str) -> str | None:
    """The accelerator a dispatched stage of this iteration ran on, if not a CPU (for the run record)."""
    for path in sorted((layout.records / "dispatch").glob(f"*@{it}.json")):
        device = json.loads(path.read_text()).get("device")
        if device and device != "cpu":
            return device
    return None
