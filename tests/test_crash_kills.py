"""SIGKILL a real `flywheel run` inside its writes, resume it, and compare with an uninterrupted run.

Each campaign kills one workspace several times in pipeline order (mid-Parquet, mid-checkpoint,
mid-`dvc commit`, mid-`dvc push`, mid-`git commit`/`git tag`), resuming each time. After every kill
nothing half-written may be committed, tagged or pushed; at the end every dvc.lock hash must equal
the uninterrupted run's (the session's `micro_workspace`), and git and DVC must be clean.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests import killing as k
from tests.conftest import write_recipe


STEP_ORDER = ("calibrate", "generate", "score", "select", "check", "train", "evaluate", "promote", "finish")
TOKEN_TMP = r"\.[A-Za-z0-9_-]{22}\.tmp"  # DVC's temp names
CACHE_OBJECT = r"\.dvc/cache/files/md5/../[0-9a-f]{30}"  # opened by os.open (mode None) to try a reflink
REMOTE_OBJECT = r"-remote/files/md5/../[0-9a-f]{30}"
FICLONE = "fcntl.ioctl| 1074041865 |1"  # the reflink ioctl, which fails here: the empty file is left


def exact_points(it: str) -> list[k.KillPoint]:
    """Exact moments inside an iteration's writes (in-process hooks), in pipeline order: each
    leaves a state the old recovery got wrong or never saw."""
    P = k.KillPoint
    return [
        P(f"parquet samples@{it} written, not renamed", f"generate@{it}",
          hook=rf"os.rename|\.samples\.parquet\.tmp-\d+ |1"),
        P(f"dvc commit score@{it}: output unlinked, its cache copy in a temp file", f"score@{it}",
          hook=rf"os.rename|{TOKEN_TMP} \S+/{it}/scored\.parquet |1"),
        P(f"checkpoint save train@{it}: config written, weights not", f"train@{it}",
          hook=rf"open|models/\.{it}\.tmp-\d+/generation_config\.json|1"),
        P(f"dvc push finish@{it}: an object copied, not renamed", f"finish@{it}",
          hook=r"os.rename|-remote/files/md5/\S+\.tmp |2"),
        P(f"git commit finish@{it}: staged, not committed", f"finish@{it}",
          hook=rf"open|records/\.{it}\.json\.tmp-|1>subprocess.Popen|git commit|1"),
        P(f"git tag finish@{it}: committed, not tagged", f"finish@{it}",
          hook=rf"open|records/\.{it}\.json\.tmp-|1>subprocess.Popen|git tag|1"),
    ]


def iteration_points(it: str, rng: random.Random) -> list[k.KillPoint]:
    """Kills from outside, on filesystem events of an iteration's writes, in pipeline order, at
    seeded moments within each write."""
    P = k.KillPoint
    return [
        P(f"parquet calibration@{it}", f"calibrate@{it}", k.temp_of("calibration.parquet")),
        P(f"parquet samples@{it}", f"generate@{it}", k.temp_of("samples.parquet")),
        P(f"dvc cache in dvc commit generate@{it}", f"generate@{it}", k.dvc_cache_write),
        P(f"dvc.lock in dvc commit score@{it}", f"score@{it}", k.lock_written),
        P(f"parquet selected@{it}", f"select@{it}", k.temp_of("selected.parquet")),
        P(f"gate json check@{it}", f"check@{it}", k.temp_of("gate.json")),
        P(f"dvc rwlock in dvc commit check@{it}", f"check@{it}", k.dvc_rwlock, nth=2),
        P(f"checkpoint save train@{it}", f"train@{it}", k.inside_temp_of(it), nth=rng.randint(1, 6)),
        P(f"dvc.lock in dvc commit train@{it}", f"train@{it}", k.lock_written),
        P(f"parquet eval samples@{it}", f"evaluate@{it}", k.temp_of("eval_samples.parquet")),
        P(f"promotion json@{it}", f"promote@{it}", k.temp_of("promotion.json")),
        P(f"run record finish@{it}", f"finish@{it}", k.temp_of(f"{it}.json")),
        P(f"dvc push finish@{it}", f"finish@{it}", k.remote_write, nth=rng.randint(1, 4)),
        P(f"git index finish@{it}", f"finish@{it}", k.git_file("index.lock"), nth=rng.randint(1, 2)),
        P(f"git branch ref finish@{it}", f"finish@{it}", k.git_file("refs/heads/main.lock")),
    ]


def rare_points(it: str) -> list[k.KillPoint]:
    """Exact moments that need a second kill to set up, or that DVC already survives."""
    P = k.KillPoint
    return [
        # a re-run replaces an output that exists: killed between atomic_dir's two renames
        P(f"dvc.lock about to be written, train@{it}", f"train@{it}",
          hook=rf"open|models/\.{it}\.tmp-\d+/config\.json|1>open|dvc\.lock w|1"),
        P(f"atomic_dir between its renames, train@{it}", f"train@{it}",
          hook=rf"os.rename|\.{it}\.tmp-\d+ \S+/models/{it} |1"),
        # DVC's reflink attempt: the object's final name exists, empty (DVC re-hashes it later)
        P(f"empty cache object (reflink try), evaluate@{it}", f"evaluate@{it}",
          hook=rf"os.rename|\.eval_samples\.parquet\.tmp-\d+ |1>open|{CACHE_OBJECT} None|1>{FICLONE}"),
        P(f"empty remote object (reflink try), finish@{it}", f"finish@{it}",
          hook=rf"open|records/\.{it}\.json\.tmp-|1>open|{REMOTE_OBJECT} None|1>{FICLONE}"),
    ]


BOOTSTRAP_POINTS = [
    k.KillPoint("parquet prompts", "prepare", k.temp_of("prompts.parquet")),
    k.KillPoint("checkpoint save base", "base", k.inside_temp_of("base"), nth=4),
    k.KillPoint("checkpoint save warmup", "warmup", k.inside_temp_of("0000"), nth=3),
    k.KillPoint("dvc.lock in dvc commit warmup", "warmup", k.lock_written),
    k.KillPoint("parquet baseline eval", "baseline", k.temp_of("eval_samples.parquet")),
    k.KillPoint("dvc cache in dvc commit reward", "reward", k.dvc_cache_write),
    k.KillPoint("dvc push finish@0000", "finish@0000", k.remote_write, nth=2),
    k.KillPoint("git tag finish@0000", "finish@0000", k.git_file("refs/tags/iter-0000.lock")),
]


def timed_points(it: str) -> list[k.KillPoint]:
    """Seeded random moments within each stage of an iteration (micro stages take 0.5-5 s)."""
    stages = ("calibrate", "generate", "score", "select", "check", "train", "evaluate", "promote", "finish")
    return [k.KillPoint(f"random moment {s}@{it}", f"{s}@{it}", within=2.0) for s in stages]


def _campaign(ws: Path, remote: Path, recipe: Path, points: list[k.KillPoint], rng: random.Random,
              target: int) -> list[k.Kill]:
    kills = []
    for point in points:
        kill = k.run_until(ws, remote, recipe, point, rng, target=target)
        kills.append(kill)
        line = f"KILL {kill.point!r}: landed={kill.landed} at={kill.event} left={kill.left}"
        print(line)
        with (ws.parent / "runs.log").open("a") as log:
            log.write(line + "\n")
        assert k.problems_now(ws, remote) == [], (kill, (ws.parent / "runs.log").read_text()[-6000:])
        it = point.step.split("@")[1] if "@" in point.step else "0000"
        if kill.landed and not point.step.startswith("finish"):
            assert f"iter-{it}" not in k.git(ws, "tag", "--list").split(), "a killed iteration must not be tagged"
    return kills


def _finish_and_compare(ws: Path, remote: Path, recipe: Path, reference: Path, target: int) -> None:
    if k.finished_iterations(ws) >= target:  # the last kill came just after the tag was written
        target += 1
    proc = k.resume(ws, recipe, target)
    assert proc.returncode == 0, (ws.parent / "runs.log").read_text()[-8000:]
    expected, got = k.lock_outs(reference), k.lock_outs(ws)
    its = {f"{i:04d}" for i in range(target + 1)}
    expected = {n: v for n, v in expected.items() if "@" not in n or n.split("@")[1] in its}
    assert {n: got.get(n) for n in expected} == expected, "resumed hashes differ from the uninterrupted run"
    assert k.problems_now(ws, remote, final=True) == []
    assert k.bad_remote_objects(ws / ".dvc" / "cache", unfinished_too=True) == [], "a corrupt object in the cache"
    assert k.git(ws, "status", "--porcelain") == ""
    assert "up to date" in k.dvc_status(ws)
    assert "in sync" in k.dvc_status(ws, "-c"), "the remote lacks something dvc.lock records"
    subjects = k.git(ws, "log", "--format=%s").splitlines()
    assert len(subjects) == len(set(subjects)), f"an iteration was committed twice: {subjects}"
    assert sorted(k.git(ws, "tag", "--list", "iter-*").split()) == [f"iter-{i:04d}" for i in range(target + 1)]


def test_kills_inside_an_iterations_writes_resume_to_identical_hashes(tmp_path, micro_workspace):
    """The default suite's campaign: six exact kills inside iteration 1 (bootstrap copied, not re-run)."""
    ws, remote = k.rewound_copy(micro_workspace, tmp_path, "iter-0000")
    recipe = write_recipe(tmp_path / "micro.yaml")
    kills = _campaign(ws, remote, recipe, exact_points("0001"), random.Random(0), target=1)
    assert all(kill.landed for kill in kills), [kill for kill in kills if not kill.landed]
    assert any("0001/." in p for p in kills[1].left), "the unlinked output's cache copy must be left behind"
    _finish_and_compare(ws, remote, recipe, micro_workspace, target=1)


@pytest.mark.slow
def test_kill_matrix_from_a_fresh_workspace(tmp_path, micro_workspace):
    """Bootstrap and both iterations, every kind of write, from an empty folder to the end."""
    recipe = write_recipe(tmp_path / "micro.yaml")
    ws, remote = tmp_path / "ws", tmp_path / "ws-remote"
    rng = random.Random(5)
    points = BOOTSTRAP_POINTS + iteration_points("0001", rng) + iteration_points("0002", rng)
    kills = _campaign(ws, remote, recipe, points, rng, target=2)
    assert sum(kill.landed for kill in kills) >= len(kills) - 3, [kill for kill in kills if not kill.landed]
    _finish_and_compare(ws, remote, recipe, micro_workspace, target=2)


@pytest.mark.slow
def test_exact_kills_in_iteration_two_including_rare_states(tmp_path, micro_workspace):
    ws, remote = k.rewound_copy(micro_workspace, tmp_path, "iter-0001")
    recipe = write_recipe(tmp_path / "micro.yaml")
    points = exact_points("0002")
    points = points[:2] + rare_points("0002")[:3] + points[2:3] + rare_points("0002")[3:] + points[3:]
    points = sorted(points, key=lambda p: STEP_ORDER.index(p.step.split("@")[0]))
    kills = _campaign(ws, remote, recipe, points, random.Random(0), target=2)
    assert all(kill.landed for kill in kills), [kill for kill in kills if not kill.landed]
    reflinks = [kill for kill in kills if "reflink" in kill.point]
    assert all(any(p.startswith("empty object") for p in kill.left) for kill in reflinks), reflinks
    _finish_and_compare(ws, remote, recipe, micro_workspace, target=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kills_at_seeded_random_moments_of_every_stage(tmp_path, micro_workspace, seed):
    ws, remote = k.rewound_copy(micro_workspace, tmp_path, "iter-0001")
    recipe = write_recipe(tmp_path / "micro.yaml")
    kills = _campaign(ws, remote, recipe, timed_points("0002"), random.Random(seed), target=2)
    assert any(kill.landed for kill in kills)
    _finish_and_compare(ws, remote, recipe, micro_workspace, target=2)


@pytest.mark.slow
def test_exact_kills_with_a_process_per_stage(tmp_path, micro_workspace):
    """The shipped default runs each stage in its own process: a kill must take those down too
    (they share the run's process group) and leave nothing they were writing."""
    import yaml

    ws, remote = k.rewound_copy(micro_workspace, tmp_path, "iter-0001")
    recipe_file = ws / "flywheel.yaml"
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe.setdefault("numerics", {})["isolate_stages"] = True  # not a DVC param: hashes are unchanged
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    k.git(ws, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-q", "-am", "a process per stage")
    kills = _campaign(ws, remote, write_recipe(tmp_path / "micro.yaml"), exact_points("0002"), random.Random(0),
                      target=2)
    assert all(kill.landed for kill in kills), [kill for kill in kills if not kill.landed]
    assert yaml.safe_load((ws / "data/iterations/0002/params.yaml").read_text())["numerics"]["isolate_stages"] is True
    _finish_and_compare(ws, remote, write_recipe(tmp_path / "micro.yaml"), micro_workspace, target=2)
