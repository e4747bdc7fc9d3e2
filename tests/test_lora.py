"""LoRA through the same SFT path on CPU: only adapter weights train, the output folder holds the
merged model plus the adapter, and both load and generate (HF backend; vLLM when installed)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tasks.config.recipe import LoraConfig, TrainConfig
from tasks.stages.train import seed_examples, sft

LORA = TrainConfig(max_steps=6, batch_size=16, learning_rate=2e-2, lora=LoraConfig(r=4, alpha=8, dropout=0.0))


@pytest.fixture(scope="module")
def lora_run(micro_assets, tmp_path_factory):
    _, prompts, base = micro_assets
    out = tmp_path_factory.mktemp("lora") / "model"
    result = sft(base, seed_examples(pl.read_parquet(prompts)), LORA, 3, out)
    return base, out, result


def test_only_adapter_weights_train(lora_run):
    from safetensors.torch import load_file

    base, out, result = lora_run
    assert result["train_loss"] > 0
    before, merged = load_file(base / "model.safetensors"), load_file(out / "model.safetensors")
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    ref = cfg["base_model_name_or_path"]  # relative, so the output hashes the same wherever the workspace lives
    assert cfg["r"] == 4 and ref.startswith("..") and (out / "adapter" / ref).resolve() == base.resolve()
    assert cfg["target_modules"] == sorted(cfg["target_modules"])
    # LoRA B starts at zero: a trained adapter has moved it
    assert all(adapter[k].abs().max() > 0 for k in adapter if "lora_B" in k)
    # nothing outside the adapted linear layers changed (embeddings, norms)...
    untouched = [k for k in before if not k.endswith("proj.weight")]
    assert untouched and all((merged[k] == before[k]).all() for k in untouched)
    # ...and each adapted layer is exactly base + (alpha / r) * B @ A
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"):
        a = adapter[f"base_model.model.{name}.lora_A.weight"]
        b = adapter[f"base_model.model.{name}.lora_B.weight"]
        expected = before[f"{name}.weight"] + (8 / 4) * b @ a
        assert (merged[f"{name}.weight"] - expected).abs().max() < 1e-6
        assert (merged[f"{name}.weight"] - before[f"{name}.weight"]).abs().max() > 1e-4


def test_lora_runs_are_bit_identical(lora_run, micro_assets, tmp_path):
    _, prompts, base = micro_assets
    _, out, _ = lora_run
    sft(base, seed_examples(pl.read_parquet(prompts)), LORA, 3, tmp_path / "model")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "model") for p in (tmp_path / "model").rglob("*") if p.is_file())
    for f in files:
        assert (out / f).read_bytes() == (tmp_path / "model" / f).read_bytes(), f


def test_merged_and_adapter_folders_load_and_generate(lora_run):
    import torch

    from tasks.models.backends.base import SamplingSpec
    from tasks.models.backends.hf import HFBackend
    from tasks.models.loading import load_causal_lm, load_tokenizer

    _, out, _ = lora_run
    merged, via_adapter = load_causal_lm(out, device="cpu"), load_causal_lm(out / "adapter", device="cpu")
    for k, v in merged.state_dict().items():
        assert torch.allclose(v, via_adapter.state_dict()[k], atol=1e-6), k
    assert load_tokenizer(out / "adapter").decode(load_tokenizer(out)("12+3")["input_ids"]) == "12+3"
    prompts = pl.DataFrame({"prompt_id": ["a", "b"], "text": ["Tom has 3 apples.", "Ann has 5 pens."]})
    spec = SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_new_tokens=8, seed=0, stop=())
    a = HFBackend(str(out), batch_size=2).generate(prompts, spec)
    b = HFBackend(str(out / "adapter"), batch_size=2).generate(prompts, spec)
    assert a.height == 2 and a["text"].to_list() == b["text"].to_list()


def test_qlora_on_cpu_is_a_clear_config_error(micro_assets, tmp_path):
    from tasks.errors import ConfigError

    _, prompts, base = micro_assets
    cfg = LORA.model_copy(update={"lora": LoraConfig(quantize="4bit")})
    with pytest.raises(ConfigError, match=r"train\.lora\.quantize: QLoRA .*needs a CUDA GPU"):
        sft(base, seed_examples(pl.read_parquet(prompts)), cfg, 3, tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_config_refuses_qlora_in_fp32():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="computes in bf16/fp16"):
        TrainConfig(precision="fp32", lora=LoraConfig(quantize="8bit"))


@pytest.mark.slow  # two vLLM engine starts: about 30 s on a busy 2-core machine
def test_vllm_serves_the_adapter_on_its_base(lora_run):
    pytest.importorskip("vllm")
    from tasks.config.recipe import VLLMConfig
    from tasks.models.backends.vllm_backend import VLLMBackend

    _, out, _ = lora_run
    prompts = ["Tom has 3 apples and buys 4 more. How many?\nA:"]

    def first_logprobs(ref: str) -> dict[int, float]:
        from vllm import SamplingParams

        backend = VLLMBackend(ref, VLLMConfig(max_model_len=128), seed=0)
        try:
            assert (backend.lora is not None) == ref.endswith("adapter")
            out_ = backend.llm.generate(prompts, SamplingParams(temperature=0, max_tokens=1, logprobs=5),
                                        lora_request=backend.lora, use_tqdm=False)
            return {t: lp.logprob for t, lp in out_[0].outputs[0].logprobs[0].items()}
        finally:
            backend.close()

    via_adapter, merged = first_logprobs(str(out / "adapter")), first_logprobs(str(out))
    assert via_adapter.keys() == merged.keys()
    assert all(abs(via_adapter[t] - merged[t]) < 1e-3 for t in merged)
