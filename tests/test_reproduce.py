"""`flywheel reproduce` from a fresh clone: bit-for-bit on CPU, and tampering is reported exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import dvc, flywheel, git


@pytest.fixture(scope="module")
def fresh_clone(micro_workspace, tmp_path_factory) -> Path:
    """A clone of the workspace elsewhere, with its data pulled from the DVC remote."""
    clone = tmp_path_factory.mktemp("clone") / "ws"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    dvc(clone, "pull", "-q")
    return clone


@pytest.mark.parametrize("it", ["1", "2"])
def test_reproduce_iteration_bit_for_bit_from_a_fresh_clone(fresh_clone, it):
    before = git(fresh_clone, "status", "--porcelain"), (fresh_clone / "dvc.lock").read_text()
    proc = flywheel("reproduce", it, "-w", str(fresh_clone), "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report["problems"]
    assert report["ok"] and report["problems"] == []
    paths = {a["path"] for a in report["artifacts"]}
    assert {f"models/{int(it):04d}", f"data/iterations/{int(it):04d}/samples.parquet"} <= paths
    assert all(a["status"] == "match" for a in report["artifacts"])
    # the live workspace was only read
    assert (git(fresh_clone, "status", "--porcelain"), (fresh_clone / "dvc.lock").read_text()) == before


def test_reproduce_a_single_stage(fresh_clone):
    report = json.loads(flywheel("reproduce", "2", "-w", str(fresh_clone), "--stage", "score", "--json").stdout)
    assert {a["stage"] for a in report["artifacts"]} == {"score@0002"} and report["ok"]


def test_tampered_remote_artifact_is_reported_exactly(micro_workspace, tmp_path):
    # copy the workspace's remote, tamper with one object, and point a clone at the copy
    remote = Path(dvc(micro_workspace, "remote", "list").split()[1])
    bad_remote = tmp_path / "remote"
    shutil.copytree(remote, bad_remote)
    lock = yaml.safe_load((micro_workspace / "dvc.lock").read_text())["stages"]
    target = next(o for o in lock["select@0002"]["outs"] if o["path"].endswith("selected.parquet"))
    obj = bad_remote / "files" / "md5" / target["md5"][:2] / target["md5"][2:]
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes() + b"tampered")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    dvc(clone, "remote", "modify", "--local", "origin", "url", str(bad_remote))
    proc = flywheel("reproduce", "2", "-w", str(clone), "--verify-only", "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [p["path"] for p in report["problems"]] == ["data/iterations/0002/selected.parquet"]


def test_unknown_iteration_is_a_clear_error(micro_workspace):
    proc = flywheel("reproduce", "9", "-w", str(micro_workspace), check=False)
    assert proc.returncode == 2 and "iteration 0009" in proc.stderr and "flywheel log" in proc.stderr


def test_artifact_missing_from_the_remote_is_reported(micro_workspace, tmp_path):
    remote = Path(dvc(micro_workspace, "remote", "list").split()[1])
    thin = tmp_path / "remote"
    shutil.copytree(remote, thin)
    lock = yaml.safe_load((micro_workspace / "dvc.lock").read_text())["stages"]
    gone = next(o for o in lock["score@0001"]["outs"])
    (thin / "files" / "md5" / gone["md5"][:2] / gone["md5"][2:]).unlink()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    dvc(clone, "remote", "modify", "--local", "origin", "url", str(thin))
    report = json.loads(flywheel("reproduce", "1", "-w", str(clone), "--verify-only", "--json", check=False).stdout)
    assert not report["ok"]
    assert [(p["path"], p["status"]) for p in report["problems"]] == [(gone["path"], "missing-from-remote")]


def test_object_missing_inside_a_model_folder_is_reported(micro_workspace, tmp_path):
    """One file of a directory output (a checkpoint's weights) gone from the remote: DVC fails the
    whole fetch naming no output; the report must still name the checkpoint, and only it."""
    remote = Path(dvc(micro_workspace, "remote", "list").split()[1])
    thin = tmp_path / "remote"
    shutil.copytree(remote, thin)
    lock = yaml.safe_load((micro_workspace / "dvc.lock").read_text())["stages"]
    tree = lock["train@0001"]["outs"][0]["md5"]
    listing = json.loads((thin / "files" / "md5" / tree[:2] / tree[2:]).read_text())
    weights = next(e["md5"] for e in listing if e["relpath"] == "model.safetensors")
    (thin / "files" / "md5" / weights[:2] / weights[2:]).unlink()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    dvc(clone, "remote", "modify", "--local", "origin", "url", str(thin))
    proc = flywheel("reproduce", "1", "-w", str(clone), "--verify-only", "--json", check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and not report["ok"]
    assert [(p["path"], p["status"]) for p in report["problems"]] == [("models/0001", "missing-from-remote")]


def test_package_drift_needs_explicit_consent(micro_workspace, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    record_path = clone / "records" / "0001.json"
    record = json.loads(record_path.read_text())
    record["packages"]["torch"] = "0.0.1"
    record_path.write_text(json.dumps(record))
    refused = flywheel("reproduce", "1", "-w", str(clone), "--verify-only", check=False)
    assert refused.returncode == 2
    assert "torch" in refused.stderr and "--allow-version-drift" in refused.stderr
    allowed = flywheel("reproduce", "1", "-w", str(clone), "--verify-only", "--allow-version-drift", "--json",
                       check=False)
    assert any("package versions differ" in n for n in json.loads(allowed.stdout)["notes"])


def test_gpu_runs_are_judged_by_metrics_within_tolerance():
    from tasks.audit.reproduce import ArtifactCheck, relax_for_gpu, summary

    checks = [ArtifactCheck("train@0001", "models/0001", "a", "b", "MISMATCH"),
              ArtifactCheck("prepare", "data/prompts/prompts.parquet", "c", "d", "MISMATCH")]
    close, notes = relax_for_gpu(checks, {"pass@1": 0.50}, {"pass@1": 0.51})
    assert [c.status for c in close] == ["within-tolerance", "MISMATCH"]  # data prep must still match
    assert any("not bit-for-bit" in n for n in notes)
    far, _ = relax_for_gpu(checks[:1], {"pass@1": 0.50}, {"pass@1": 0.40})
    assert far[0].status == "MISMATCH" and not summary(far)["ok"]


def test_reproducing_a_vllm_iteration_without_vllm_is_a_clear_error(micro_workspace, tmp_path, monkeypatch):
    import subprocess

    from tasks.audit.reproduce import require_backend
    from tasks.errors import ConfigError
    from tasks.models import backends
    from tasks.workspace.layout import Layout

    clone = tmp_path / "ws"
    subprocess.run(["git", "clone", "-q", str(micro_workspace), str(clone)], check=True)
    params = Layout(clone).params("0001")
    params.write_text(params.read_text().replace("backend: hf", "backend: vllm"))
    monkeypatch.setattr(backends.base, "vllm_usable", lambda: False)  # a machine without vLLM
    with pytest.raises(ConfigError, match="generate.backend"):
        require_backend(Layout(clone), "0001")
