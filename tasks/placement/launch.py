"""Multi-process training: the launch command built from the recipe, and running a stage under it.

With `launch.launcher` set, the train (or warm-up) stage re-runs itself as `flywheel stage ...`
under `accelerate launch` or `torchrun`, one process per GPU; inside the launched processes
FLYWHEEL_LAUNCHED is set, so they train instead of launching again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from tasks.config.recipe import LaunchConfig, TrainConfig

log = logging.getLogger(__name__)
LAUNCHED_ENV = "FLYWHEEL_LAUNCHED"


def should_launch(cfg: TrainConfig) -> bool:
    """True in the stage's own process when the recipe asks for a launcher; False inside launched workers."""
    return cfg.launch.launcher != "none" and os.environ.get(LAUNCHED_ENV) != "1"


def stage_args(workspace: Path, stage: str, iteration: str | None) -> list[str]:
    args = ["-m", "flywheel", "stage", stage, "--workspace", str(workspace)]
    return args + (["--iteration", iteration] if iteration else [])


def mixed_precision(launch: LaunchConfig, precision: str) -> str:
    if launch.mixed_precision != "auto":
        return launch.mixed_precision
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]


def launch_command(launch: LaunchConfig, precision: str, target: list[str], python: str = sys.executable) -> list[str]:
    """The full command line: `<python> -m accelerate.commands.launch ... -m flywheel stage ...` or the
    torchrun (`torch.distributed.run`) equivalent. `target` is `stage_args(...)`."""
    if launch.launcher == "accelerate":
        cmd = [python, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes),
               "--num_machines", str(launch.num_machines), "--machine_rank", str(launch.machine_rank),
               "--mixed_precision", mixed_precision(launch, precision), "--dynamo_backend", "no"]
        if launch.cpu:
            cmd.append("--cpu")
        elif launch.num_processes * launch.num_machines > 1:
            cmd.append("--multi_gpu")
        if launch.main_process_ip:
            cmd += ["--main_process_ip", launch.main_process_ip]
        if launch.main_process_port:
            cmd += ["--main_process_port", str(launch.main_process_port)]
    elif launch.launcher == "torchrun":
        cmd = [python, "-m", "torch.distributed.run", "--nproc_per_node", str(launch.num_processes),
               "--nnodes", str(launch.num_machines), "--node_rank", str(launch.machine_rank)]
        if launch.main_process_ip:
            cmd += ["--master_addr", launch.main_process_ip]
        if launch.main_process_port:
            cmd += ["--master_port", str(launch.main_process_port)]
    else:
        raise ValueError("launcher 'none' has no launch command")
    return cmd + list(launch.extra_args) + target


def run_launched(cfg: TrainConfig, precision: str, workspace: Path, stage: str, iteration: str | None) -> dict:
    """Run the stage under the launcher and return the main process's result (its JSON line on stdout)."""
    cmd = launch_command(cfg.launch, precision, stage_args(workspace, stage, iteration))
    log.info("launching: %s", " ".join(cmd))
    env = {**os.environ, LAUNCHED_ENV: "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.stderr:
        log.info("launched %s stderr:\n%s", stage, proc.stderr[-20_000:])
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-15:]
        raise RuntimeError(f"launched {stage} exited {proc.returncode}: {' '.join(cmd)}\n" + "\n".join(tail))
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not results:
        raise RuntimeError(f"launched {stage} printed no result: {' '.join(cmd)}")
    return results[0]
