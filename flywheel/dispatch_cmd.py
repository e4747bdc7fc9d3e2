"""`flywheel deploy-worker`: register the stage worker flow on a Prefect work pool."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flywheel.common import fail, quiet_prefect


def deploy_worker(pool: Annotated[str, typer.Option("--pool", "-p", help="Work pool the worker polls "
                                                    "(create it with `prefect work-pool create`).")],
                  name: Annotated[str, typer.Option(help="Deployment name; recipes point at "
                                                    "flywheel-stage/NAME in dispatch.<stage>.deployment.")] = "gpu",
                  image: Annotated[str | None, typer.Option(help="Container image with flywheel installed "
                                                            "(docker/kubernetes pools).")] = None,
                  job_variables: Annotated[str | None, typer.Option(
                      "--job-variables", help="JSON object of job template defaults, e.g. '{\"env\": {...}}'.")] = None,
                  work_queue: Annotated[str | None, typer.Option(help="Work queue of the pool.")] = None) -> None:
    """Deploy the worker flow that runs dispatched stages (train, generate) on a work pool.

    Needs a Prefect API (PREFECT_API_URL). The worker's environment must have flywheel installed and
    DVC credentials for the workspace's remote; see README: Running training on a GPU work pool.
    """
    from tasks.errors import ConfigError

    quiet_prefect()
    try:
        try:
            variables = json.loads(job_variables) if job_variables else None
        except json.JSONDecodeError as err:
            raise ConfigError(f"not valid JSON ({err.msg}).", field="--job-variables",
                              fix="pass a JSON object, e.g. '{\"env\": {\"CUDA_VISIBLE_DEVICES\": \"0\"}}'.") from None
        if variables is not None and not isinstance(variables, dict):
            raise ConfigError("must be a JSON object.", field="--job-variables", fix="wrap the settings in {...}.")
        from flows.dispatch import deploy_stage_worker

        deployment = deploy_stage_worker(name, pool, image=image, job_variables=variables, work_queue=work_queue)
    except Exception as err:  # noqa: BLE001
        fail(err)
    typer.echo(f"Deployed {deployment} on work pool {pool}. Set dispatch.train.deployment: {deployment} in the recipe.")
