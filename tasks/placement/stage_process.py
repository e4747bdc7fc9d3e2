"""Run one stage in a fresh interpreter, as `dvc repro` does, and hand its result back.

A stage run in the flow's own process would inherit whatever the earlier stages left there: a
vLLM engine that replaced `torch.set_num_threads` and bound its threads, a second OpenMP runtime,
a torch.distributed group, warmed allocator pools. A fresh process per stage sees none of it, so
the bytes a stage writes depend only on its inputs, params, seeds and the pinned numeric settings
(tasks/numerics/), which the process starts with.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from tasks.numerics.state import process_env
from tasks.pipeline import ITERATION_STAGES, run_stage, stage_recipe
from tasks.workspace.layout import Layout


class StageProcessError(RuntimeError):
    """A stage process failed with an error that could not be handed back as itself."""


def run_stage_isolated(layout: Layout, stage: str, it: str | None = None, usage: dict | None = None) -> dict | None:
    """`run_stage` in a child process; its errors are re-raised here as the same exception type.

    `usage`, when given, receives `peak_rss_mb`: the largest resident set of the child and of the
    processes it waited for (tasks/metrics/costs.py), as the child measured it."""
    recipe = stage_recipe(layout, it if stage in ITERATION_STAGES else None)
    with tempfile.TemporaryDirectory(prefix="flywheel-stage-") as scratch:
        out = Path(scratch) / "result.pkl"
        env = {**process_env(recipe.numerics), "FLYWHEEL_STAGE_PARENT": str(os.getpid())}
        cmd = [sys.executable, "-m", "tasks.placement.stage_process", str(layout.root), stage, it or "", str(out)]
        # the child's stdout goes to our stderr: stdout belongs to the command (e.g. `--json`)
        proc = subprocess.run(cmd, env=env, stdout=sys.stderr.fileno(), stdin=subprocess.DEVNULL)
        if not out.is_file():
            raise StageProcessError(f"stage {stage}{'@' + it if it else ''} died with exit code {proc.returncode} "
                                    "before reporting a result (killed, or out of memory?)")
        ok, payload, peak_rss_mb = pickle.loads(out.read_bytes())
    if usage is not None:
        usage["peak_rss_mb"] = peak_rss_mb
    if ok:
        return payload
    raise payload


def _die_with_parent() -> None:
    """A stage must never outlive the run that started it (it would write into a workspace that a
    later run then owns): the kernel kills it when the parent dies."""
    import ctypes
    import signal

    parent = int(os.environ.get("FLYWHEEL_STAGE_PARENT", "0"))
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:  # the parent died before the request took effect
        os._exit(137)


def _portable(err: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a StageProcessError with its text."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - anything unpicklable is reported by its text
        return StageProcessError(f"{type(err).__name__}: {err}")


def main(argv: list[str]) -> int:
    root, stage, it, out = argv
    _die_with_parent()
    try:
        result = (True, run_stage(Layout(Path(root)), stage, it or None))
        code = 0
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the parent
        import traceback

        from tasks.errors import FlywheelError

        if not isinstance(err, FlywheelError):
            traceback.print_exc()
        result, code = (False, _portable(err)), 1
    from tasks.metrics.costs import own_peak_rss_mb

    tmp = Path(out).with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps((*result, own_peak_rss_mb(children=True))))
    os.replace(tmp, out)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
