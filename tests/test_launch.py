"""Multi-process launch: the command built from the recipe, and a real `accelerate launch --cpu`
warm-up that gives the same model as training in-process."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from tasks.config.recipe import LaunchConfig, TrainConfig
from tasks.placement.launch import LAUNCHED_ENV, launch_command, should_launch, stage_args


def test_accelerate_command_for_eight_gpus(tmp_path):
    launch = LaunchConfig(launcher="accelerate", num_processes=8, extra_args=["--gpu_ids", "all"])
    cmd = launch_command(launch, "bf16", stage_args(tmp_path, "train", "0003"), python="py")
    assert cmd == ["py", "-m", "accelerate.commands.launch", "--num_processes", "8", "--num_machines", "1",
                   "--machine_rank", "0", "--mixed_precision", "bf16", "--dynamo_backend", "no", "--multi_gpu",
                   "--gpu_ids", "all",
                   "-m", "flywheel", "stage", "train", "--workspace", str(tmp_path), "--iteration", "0003"]


def test_accelerate_command_multi_node_and_cpu(tmp_path):
    launch = LaunchConfig(launcher="accelerate", num_processes=4, num_machines=2, machine_rank=1,
                          main_process_ip="10.0.0.1", main_process_port=29500, mixed_precision="fp16")
    cmd = launch_command(launch, "fp16", stage_args(tmp_path, "warmup", None), python="py")
    assert cmd[cmd.index("--num_machines") + 1] == "2" and cmd[cmd.index("--machine_rank") + 1] == "1"
    assert cmd[cmd.index("--main_process_ip") + 1] == "10.0.0.1" and "--multi_gpu" in cmd
    assert cmd[-6:] == ["-m", "flywheel", "stage", "warmup", "--workspace", str(tmp_path)]
    cpu = launch_command(LaunchConfig(launcher="accelerate", cpu=True), "fp32", [], python="py")
    assert "--cpu" in cpu and "--multi_gpu" not in cpu and cpu[cpu.index("--mixed_precision") + 1] == "no"


def test_torchrun_command(tmp_path):
    launch = LaunchConfig(launcher="torchrun", num_processes=8, num_machines=2, machine_rank=0,
                          main_process_ip="node0", main_process_port=29400)
    cmd = launch_command(launch, "bf16", stage_args(tmp_path, "train", "0001"), python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "2", "--node_rank", "0",
                   "--master_addr", "node0", "--master_port", "29400",
                   "-m", "flywheel", "stage", "train", "--workspace", str(tmp_path), "--iteration", "0001"]


@pytest.mark.parametrize("bad, match", [
    ({"num_processes": 2}, "need launcher"),
    ({"launcher": "torchrun", "num_machines": 2}, "main_process_ip"),
    ({"launcher": "torchrun", "machine_rank": 1}, "machine_rank"),
])
def test_launch_config_refuses_bad_combinations(bad, match):
    with pytest.raises(ValidationError, match=match):
        LaunchConfig(**bad)


def test_mixed_precision_must_agree_with_precision():
    with pytest.raises(ValidationError, match="disagrees"):
        TrainConfig(precision="fp32", launch=LaunchConfig(launcher="accelerate", mixed_precision="bf16"))


def test_launched_workers_do_not_launch_again(monkeypatch):
    cfg = TrainConfig(launch=LaunchConfig(launcher="accelerate"))
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    assert should_launch(cfg) and not should_launch(TrainConfig())
    monkeypatch.setenv(LAUNCHED_ENV, "1")
    assert not should_launch(cfg)


def test_accelerate_cpu_launch_trains_the_warmup_like_in_process(micro_recipe, tmp_path):
    """`accelerate launch --cpu --num_processes 1 -m flywheel stage warmup` end to end on the micro model."""
    from tasks.config.loading import load_recipe
    from tasks.pipeline import run_stage
    from tasks.workspace.repo import init_workspace

    data = yaml.safe_load(micro_recipe.read_text())
    data["warmup"]["launch"] = {"launcher": "accelerate", "cpu": True}
    micro_recipe.write_text(yaml.safe_dump(data))
    layout = init_workspace(tmp_path / "ws", load_recipe(micro_recipe))
    for stage in ("prepare", "base"):
        run_stage(layout, stage)
    launched = run_stage(layout, "warmup")
    assert launched["steps"] == 3 and launched["train_loss"] > 0
    weights = (layout.model("0000") / "model.safetensors").read_bytes()

    from tasks.seeds import derive_seed
    from tasks.stages.bootstrap import warmup

    recipe = load_recipe(layout.recipe)
    local = warmup(recipe, layout.base_model, layout.prompts, derive_seed(recipe.run.seed, "0000", "warmup"),
                   tmp_path / "in-process")
    assert local["train_loss"] == pytest.approx(launched["train_loss"], abs=1e-6)
    assert (tmp_path / "in-process" / "model.safetensors").read_bytes() == weights
