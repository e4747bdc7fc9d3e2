"""Stage dispatch through the DVC remote and run-cache: the worker's outputs are the local run's,
and a corrupt, missing or misreported output is refused before anything is recorded.

These tests drive the protocol's real pieces (DVC pull/repro/push, run-cache restore, training)
without a Prefect server; tests/test_dispatch_server.py runs it through a real server and worker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tasks.placement.dispatch import (DispatchError, DispatchRequest, WorkerReport, build_request, check_report,
                            collect_outputs, push_inputs)
from tasks.placement.dispatch_worker import run_request, write_skeleton
from tasks.workspace.layout import Layout
from tasks.workspace.versioning import commit_stage
from tests.conftest import dvc, git

IT = "0002"
NAME = f"train@{IT}"


def remote_of(ws: Path) -> Path:
    return Path(dvc(ws, "remote", "list").split()[1])


def rewound_copy(src: Path, dest: Path) -> Path:
    """A clone of the finished workspace `src`, with its own copy of the remote (tests corrupt
    remotes), put back in the state the flow is in when it reaches train@0002: the stages from
    train on are not in dvc.lock, and neither the workspace nor its cache holds model 0002."""
    shutil.copytree(remote_of(src), dest.parent / f"{dest.name}-remote")
    subprocess.run(["git", "clone", "-q", str(src), str(dest)], check=True)
    dvc(dest, "remote", "modify", "origin", "url", str(dest.parent / f"{dest.name}-remote"))
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    for stage in ("train", "evaluate", "promote"):
        lock["stages"].pop(f"{stage}@{IT}")
    (dest / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    dvc(dest, "pull", "-q", *lock["stages"])  # what is still recorded, which no longer includes models/0002
    assert not (dest / "models" / IT).exists()
    return dest


def remote_object(remote: Path, md5: str) -> Path:
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def model_file_md5(remote: Path, dir_md5: str, relpath: str) -> str:
    listing = json.loads(remote_object(remote, dir_md5).read_text())
    return next(e["md5"] for e in listing if e["relpath"] == relpath)


@pytest.fixture(scope="module")
def dispatched(micro_workspace, tmp_path_factory):
    """A workspace rewound to train@0002 whose remote holds no model 0002, after a worker ran the
    stage from the remote alone and pushed its outputs and run-cache entry there."""
    base = tmp_path_factory.mktemp("dispatch")
    ws = rewound_copy(micro_workspace, base / "ws")
    recorded = yaml.safe_load((micro_workspace / "dvc.lock").read_text())["stages"][NAME]
    dir_md5 = recorded["outs"][0]["md5"]
    remote = remote_of(ws)
    for md5 in (model_file_md5(remote, dir_md5, "model.safetensors"), dir_md5):
        remote_object(remote, md5).unlink()  # only the worker can put model 0002 back
    layout = Layout(ws.resolve())
    request = build_request(layout, "train", IT)
    push_inputs(layout, request)
    report = run_request(request, base / "worker")
    return ws, request, report, recorded


def test_request_carries_hashes_and_small_files_only(dispatched, micro_workspace):
    ws, request, _, recorded = dispatched
    assert request.name == NAME and Path(request.remote_url).is_absolute()
    assert request.deps == {d["path"]: d["md5"] for d in recorded["deps"]}
    assert "data/iterations/0002/selected.parquet" in request.pull
    assert "data/iterations/0002/gate.json" in request.files  # not cached by DVC: sent inline, checked by hash
    assert set(request.files) >= {"dvc.yaml", "dvc.lock", "iterations.yaml", "flywheel.yaml",
                                  "data/iterations/0002/params.yaml"}
    assert not any(p.endswith((".parquet", ".safetensors")) for p in request.files)
    # the lock sent holds only the stages that produced the deps
    sent = yaml.safe_load(request.files["dvc.lock"])["stages"]
    assert "select@0002" in sent and "generate@0002" not in sent and NAME not in sent


def test_worker_output_is_bit_identical_to_the_local_run(dispatched):
    ws, request, report, recorded = dispatched
    check_report(request, report)
    assert report.outs() == {o["path"]: o["md5"] for o in recorded["outs"]}
    work = rewound_copy(ws, ws.parent / "collect")
    layout = Layout(work.resolve())
    head = git(work, "rev-parse", "HEAD")
    assert collect_outputs(layout, NAME, report.outs()) == report.outs()
    commit_stage(layout.root, NAME)
    entry = yaml.safe_load((work / "dvc.lock").read_text())["stages"][NAME]
    for key in ("cmd", "deps", "params", "outs"):
        assert entry[key] == recorded[key], key
    assert "up to date" in dvc(work, "status", NAME)
    assert git(work, "rev-parse", "HEAD") == head  # recording the iteration is the flow's job


def _assert_nothing_recorded(ws: Path, lock_before: str) -> None:
    assert not (ws / "models" / IT).exists()
    assert (ws / "dvc.lock").read_text() == lock_before


def test_corrupt_output_on_the_remote_is_refused(dispatched):
    ws, _, report, recorded = dispatched
    work = rewound_copy(ws, ws.parent / "corrupt")
    remote = remote_of(work)
    obj = remote_object(remote, model_file_md5(remote, report.outs()[f"models/{IT}"], "model.safetensors"))
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    obj.write_bytes(bytes(data))
    lock_before = (work / "dvc.lock").read_text()
    with pytest.raises(DispatchError, match="do not match their hashes"):
        collect_outputs(Layout(work.resolve()), NAME, report.outs())
    _assert_nothing_recorded(work, lock_before)
    # the corrupt object was not kept in the local cache: a retry fetches it again
    assert not any(p.name == obj.name for p in (work / ".dvc" / "cache").rglob("*"))


def test_missing_output_on_the_remote_is_refused(dispatched):
    ws, _, report, _ = dispatched
    work = rewound_copy(ws, ws.parent / "missing")
    remote = remote_of(work)
    remote_object(remote, model_file_md5(remote, report.outs()[f"models/{IT}"], "model.safetensors")).unlink()
    lock_before = (work / "dvc.lock").read_text()
    with pytest.raises(DispatchError, match="no run-cache entry|not all output objects"):
        collect_outputs(Layout(work.resolve()), NAME, report.outs())
    _assert_nothing_recorded(work, lock_before)


def test_report_that_disagrees_with_the_remote_is_refused(dispatched):
    ws, request, report, _ = dispatched
    work = rewound_copy(ws, ws.parent / "misreport")
    lock_before = (work / "dvc.lock").read_text()
    forged = {p: "0" * 32 + ".dir" for p in report.outs()}
    with pytest.raises(DispatchError, match="differs from the worker's report"):
        collect_outputs(Layout(work.resolve()), NAME, forged)
    _assert_nothing_recorded(work, lock_before)
    # a worker that trained on other inputs is refused before anything is fetched
    lock = {**report.lock, "deps": [{**d, "md5": "f" * 32} if d["path"].endswith("selected.parquet") else d
                                    for d in report.lock["deps"]]}
    with pytest.raises(DispatchError, match="other inputs"):
        check_report(request, report.model_copy(update={"lock": lock}))


def test_worker_refuses_unsafe_paths_and_corrupt_inputs(dispatched, tmp_path):
    _, request, _, _ = dispatched
    for bad in ("../escape.txt", "/etc/passwd", ".dvc/config", ".git/hooks/post-checkout"):
        evil = request.model_copy(update={"files": {**request.files, bad: "x"}})
        with pytest.raises(DispatchError, match="unsafe path"):
            write_skeleton(tmp_path / f"s{len(bad)}", evil)
    wrong = request.model_copy(update={"deps": {**request.deps, "data/prompts/prompts.parquet": "0" * 32}})
    with pytest.raises(DispatchError, match="do not match the recorded hashes"):
        run_request(wrong, tmp_path / "w")


def test_report_round_trips_through_the_artifact_markdown(dispatched):
    from flows.dispatch import parse_report, report_markdown

    report = dispatched[2]
    assert parse_report(report_markdown(report)) == report
    assert isinstance(DispatchRequest.model_validate(dispatched[1].model_dump()), DispatchRequest)
    assert isinstance(report, WorkerReport) and report.device == "cpu" and report.packages["dvc"]
