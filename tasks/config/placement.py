"""Where stages run: sharded over Dask workers, or on a Prefect work pool. Neither is a DVC param."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from tasks.config.base import _Model
from tasks.config.ranges import Seconds


class ScaleConfig(_Model):
    """Sharding generation and scoring across Dask workers (Prefect's DaskTaskRunner).

    Shards are cut from the sorted prompts, never from the worker count, so the merged table is
    byte-identical to the unsharded stage's for any number of workers. Not a DVC param: it
    changes where a stage runs, not what it writes."""

    runner: Literal["local", "dask"] = Field(
        "local", description="local: one process, as without this section; dask: shard over Dask workers")
    shard_size: int = Field(
        256, ge=1, description="target prompts per shard; a shard ends at the next generation batch (HF) "
                               "or reward-model batch boundary, so it reproduces the unsharded run exactly")
    n_workers: int = Field(2, ge=1, description="worker processes of the local Dask cluster (without address)")
    threads_per_worker: int = Field(1, ge=1, description="threads per local worker; model calls still run "
                                                         "one at a time per process (one seeded RNG)")
    address: str | None = Field(
        None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786; its workers must see the "
                          "workspace and model paths and have flywheel installed")


# job_variables are overrides of a work pool's template, a few short entries: a bound on their size
# keeps the credentials check and every error about them linear and small
MAX_JOB_VARIABLES_CHARS = 16_384


def _within(value: Any, budget: int) -> bool:
    """Whether `value` (nested lists and mappings) holds at most `budget` characters, counting each key and
    leaf as its text and each container as two; stops as soon as the budget is spent."""
    left = budget
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            left -= 2
            for k, x in v.items():
                left -= len(str(k)) if isinstance(k, str) else 8
                stack.append(x)
                if left < 0:
                    return False
        elif isinstance(v, list | tuple):
            left -= 2
            if len(v) > budget:
                return False
            stack.extend(v)
        else:
            left -= len(v) if isinstance(v, str | bytes) else 8
        if left < 0:
            return False
    return True


class StageDispatch(_Model):
    """Run one stage on a Prefect work pool (see README: Running training on a GPU work pool)."""

    deployment: str = Field("flywheel-stage/gpu", pattern=r"^[^/\s]+/[^/\s]+$",
                            description="`flow/deployment` created by `flywheel deploy-worker`")
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="per-run overrides of the work pool's job template, e.g. "
                                          "{env: {CUDA_VISIBLE_DEVICES: '0'}}; never credentials (the recipe is in git)")
    work_queue: str | None = Field(None, description="a queue of the pool, e.g. one per GPU type")
    timeout_s: Seconds = Field(6 * 3600, description="wait this long for the worker, then cancel its run")
    poll_interval_s: Seconds = Field(5, description="how often to poll the worker run's state")

    @field_validator("job_variables")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        import json
        import re

        from tasks.workspace.secrets import has_credentials

        if not _within(v, MAX_JOB_VARIABLES_CHARS):  # before anything formats or searches it
            raise ValueError(f"holds more than {MAX_JOB_VARIABLES_CHARS:,} characters; keep the few per-run "
                             "overrides here and the rest in the work pool's job template")
        text = json.dumps(v, default=str)
        if re.search(r"(?i)secret|token|password|credential|access_key", text) or has_credentials(text):
            raise ValueError("looks like it carries credentials; configure them on the worker instead")
        return v


class DispatchConfig(_Model):
    """Stages to run on a work pool instead of in the nightly process; data moves through the DVC remote."""

    train: StageDispatch | None = Field(None, description="None: train locally")
    generate: StageDispatch | None = Field(None, description="None: generate locally")
