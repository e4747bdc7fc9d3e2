"""What the SFT stage hands to TRL: precision, the model to train, the PEFT config and the SFTConfig.

Defaults are pinned to the plain transformers Trainer's behaviour (fp32 on CPU, no gradient
checkpointing, the model's own cross-entropy), because TRL's SFTConfig turns on bf16 and gradient
checkpointing by default and its fused LM-head loss differs from it in the last float bits.
"""

from __future__ import annotations

from pathlib import Path

from tasks.config.recipe import LoraConfig, TrainConfig
from tasks.errors import ConfigError

RECIPE = "recipe"


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(cfg: TrainConfig, section: str = "train") -> str:
    """fp32, bf16 or fp16 for this machine; a clear error where the hardware cannot do what was asked."""
    import torch

    gpu = on_gpu()
    if cfg.precision == "auto":
        return "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
    if cfg.precision == "fp16" and not gpu:
        raise ConfigError("fp16 mixed precision needs a CUDA GPU.", file=RECIPE, field=f"{section}.precision",
                          fix="use 'auto' (fp32 on CPU) or 'bf16'.")
    if cfg.precision == "bf16" and gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bf16 support.", file=RECIPE, field=f"{section}.precision",
                          fix="use 'fp16' on pre-Ampere GPUs.")
    return cfg.precision


def check_hardware(cfg: TrainConfig, section: str = "train") -> None:
    """QLoRA needs bitsandbytes on a CUDA GPU: refuse early, before any model is loaded."""
    if cfg.lora is None or cfg.lora.quantize == "none":
        return
    field = f"{section}.lora.quantize"
    if not on_gpu():
        raise ConfigError("QLoRA (a quantized base) needs a CUDA GPU; none is visible.", file=RECIPE, field=field,
                          fix="set it to 'none' for LoRA on CPU, or run on a GPU machine.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ConfigError("QLoRA needs the bitsandbytes package.", file=RECIPE, field=field,
                          fix="pip install bitsandbytes, or set it to 'none'.") from err


def load_train_model(init_model: str | Path, cfg: TrainConfig, precision: str):
    """The model to fine-tune, on CPU (the Trainer moves it to its device). Full fine-tuning keeps fp32
    master weights under mixed precision; a frozen LoRA base is loaded in the compute dtype to save memory."""
    import torch

    from tasks.models.loading import load_causal_lm

    lora = cfg.lora
    if lora is None or lora.quantize == "none":
        dtype = "float32" if lora is None or precision == "fp32" else {"bf16": "bfloat16", "fp16": "float16"}[precision]
        return load_causal_lm(init_model, dtype=dtype, device="cpu")
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tasks.models.loading import resolve_model_ref

    compute = torch.bfloat16 if precision == "bf16" else torch.float16
    quant = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=compute)
             if lora.quantize == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
    # a quantized model cannot be moved after loading: place it on this process's GPU directly
    return AutoModelForCausalLM.from_pretrained(resolve_model_ref(init_model), quantization_config=quant,
                                                dtype=compute, device_map={"": PartialState().local_process_index})


def peft_config(lora: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")


def sft_config(cfg: TrainConfig, seed: int, precision: str, output_dir: Path, quiet: bool):
    """SFTConfig with every default that differs from TrainingArguments set back explicitly."""
    from trl import SFTConfig

    save = {"save_strategy": "steps", "save_steps": cfg.checkpoint_every, "save_total_limit": 2} \
        if cfg.checkpoint_every else {"save_strategy": "no"}
    return SFTConfig(
        output_dir=str(output_dir), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, seed=seed, data_seed=seed, report_to="none",
        logging_steps=max(1, cfg.max_steps // 10), disable_tqdm=quiet, dataloader_num_workers=0,
        remove_unused_columns=False, use_cpu=not on_gpu(), train_sampling_strategy=cfg.sampling,
        bf16=precision == "bf16", fp16=precision == "fp16",
        gradient_checkpointing=cfg.gradient_checkpointing,
        # numerics.gpu_deterministic (tasks/numerics/state.py pins torch's flags first): the Trainer's own
        # determinism switches too; on CPU the bits are the same either way, so it stays off there
        full_determinism=on_gpu() and torch_deterministic(),
        include_num_input_tokens_seen="non_padding",  # the cost report's training tokens; no effect on the weights
        # we tokenise ourselves (the model's chat template, loss on the answer only) and pad in our collator
        max_length=cfg.max_length, dataset_kwargs={"skip_prepare_dataset": True}, **save)


def torch_deterministic() -> bool:
    import torch

    return torch.are_deterministic_algorithms_enabled()


def trainer_class(fused_loss: bool):
    """SFTTrainer, or one whose loss is the model's own cross-entropy (the plain Trainer's), which keeps
    fp32 runs bit-identical to it and skips the per-step entropy/accuracy metrics."""
    from transformers import Trainer
    from trl import SFTTrainer

    if fused_loss:
        return SFTTrainer

    class StandardLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = {**inputs, "use_cache": False}  # no KV cache in training (it clashes with checkpointing)
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return StandardLossSFTTrainer


def save_lora_output(peft_model, tokenizer, init_model: str | Path, final_dir: Path, tmp_dir: Path) -> None:
    """Write the adapter to `tmp_dir/adapter` and the merged fp32 model to `tmp_dir` (renamed to `final_dir`)."""
    from tasks.models.adapters import ADAPTER_DIR, make_portable, merge_adapter
    from tasks.models.loading import load_causal_lm

    adapter_dir = tmp_dir / ADAPTER_DIR
    peft_model.save_pretrained(adapter_dir)
    # merge into a freshly loaded full-precision base: exact for LoRA, and the only way for a quantized base
    merged = merge_adapter(adapter_dir, load_causal_lm(str(init_model), dtype="float32", device="cpu"))
    merged.save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    make_portable(adapter_dir, init_model, final_dir / ADAPTER_DIR)
