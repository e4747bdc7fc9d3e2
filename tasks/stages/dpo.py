"""Stage `train` with objective `dpo`: direct preference optimisation with TRL's DPOTrainer.

The pairs table (select mode `pairs`) gives prompt, chosen and rejected texts; the prompt is rendered
with the model's chat template as in SFT, and TRL appends EOS to both answers. The reference model is
the parent: `continue` mode trains from it, so the init model is loaded a second time, frozen (with
LoRA, TRL uses the base with the adapter switched off, the same weights). Everything a float depends
on is fixed (seeds, fp32 on CPU, no dropout, no gradient checkpointing unless asked), so a CPU run
reproduces bit for bit, checkpoints included.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import polars as pl

from tasks.config.recipe import TrainConfig
from tasks.models.loading import load_tokenizer, model_fingerprint, render_prompts


def pair_rows(tokenizer, pairs: pl.DataFrame) -> list[dict[str, str]]:
    """DPOTrainer's standard (non-conversational) rows: the rendered prompt, the two answers."""
    prompts = render_prompts(tokenizer, pairs["prompt"].to_list())
    return [{"prompt": p, "chosen": c, "rejected": r}
            for p, c, r in zip(prompts, pairs["chosen"].to_list(), pairs["rejected"].to_list())]


def dpo_losses(cfg: TrainConfig) -> dict:
    """DPOConfig's loss_type (and loss_weights): the preference loss, plus TRL's `sft` loss on the chosen
    answer when train.dpo.sft_weight is set (Iterative RPO)."""
    if not cfg.dpo.sft_weight:
        return {"loss_type": [cfg.dpo.loss_type]}
    return {"loss_type": [cfg.dpo.loss_type, "sft"], "loss_weights": [1.0, cfg.dpo.sft_weight]}


def dpo_config(cfg: TrainConfig, seed: int, precision: str, output_dir: Path, quiet: bool):
    """DPOConfig with every default that differs from TrainingArguments set back (as sft_config does)."""
    from trl import DPOConfig

    from tasks.models.sft_setup import on_gpu

    save = {"save_strategy": "steps", "save_steps": cfg.checkpoint_every, "save_total_limit": 2} \
        if cfg.checkpoint_every else {"save_strategy": "no"}
    return DPOConfig(
        output_dir=str(output_dir), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, seed=seed, data_seed=seed, report_to="none",
        logging_steps=max(1, cfg.max_steps // 10), disable_tqdm=quiet, dataloader_num_workers=0,
        use_cpu=not on_gpu(), train_sampling_strategy=cfg.sampling,
        bf16=precision == "bf16", fp16=precision == "fp16", gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length, beta=cfg.dpo.beta, **dpo_losses(cfg),
        label_smoothing=cfg.dpo.label_smoothing, disable_dropout=True, precompute_ref_log_probs=False,
        dataset_num_proc=None, **save)


def dpo(init_model: str | Path, pairs: pl.DataFrame, cfg: TrainConfig, seed: int, out_dir: Path,
        checkpoint_dir: Path | None = None, section: str = "train") -> dict:
    """Train `init_model` (also the reference) on `pairs`; save to `out_dir` atomically, as `sft` does."""
    from datasets import Dataset
    from trl import DPOTrainer

    from tasks.models import resume

    from tasks.models import sft_setup
    from tasks.models.loading import load_causal_lm
    from tasks.stages.train import _save, quiet_trainer

    if pairs.height == 0:
        raise ValueError("no preference pairs")
    sft_setup.check_hardware(cfg, section)
    precision = sft_setup.resolve_precision(cfg, section)
    tokenizer = load_tokenizer(init_model)
    rows = pair_rows(tokenizer, pairs)
    quiet = os.environ.get("FLYWHEEL_PROGRESS") != "1" and not sys.stderr.isatty()
    ckpt_dir = Path(checkpoint_dir or resume.default_checkpoint_dir(Path(out_dir))) if cfg.checkpoint_every else None
    with tempfile.TemporaryDirectory(prefix="flywheel-dpo-") as scratch:
        args = dpo_config(cfg, seed, precision, ckpt_dir or Path(scratch), quiet)
        main = args.process_index == 0
        start = None if ckpt_dir is None else resume.start_point(
            ckpt_dir, resume.run_key(model_fingerprint(init_model), rows, cfg.model_dump_json(), seed), args)
        model = sft_setup.load_train_model(init_model, cfg, precision)
        ref = None if cfg.lora else load_causal_lm(init_model, dtype="float32" if precision == "fp32" else
                                                   {"bf16": "bfloat16", "fp16": "float16"}[precision], device="cpu")
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer,
                             peft_config=sft_setup.peft_config(cfg.lora) if cfg.lora else None)
        quiet_trainer(trainer)
        result = trainer.train(resume_from_checkpoint=str(start) if start else None)
        if main:
            _save(trainer, tokenizer, init_model, cfg, Path(out_dir))
            if ckpt_dir is not None:
                resume.clear(ckpt_dir)
        args.distributed_state.wait_for_everyone()
    summary = {"train_loss": round(float(result.training_loss), 6), "pairs": pairs.height, "steps": cfg.max_steps,
               "objective": "dpo", "beta": cfg.dpo.beta, "loss_type": cfg.dpo.loss_type}
    if cfg.dpo.sft_weight:
        summary["sft_weight"] = cfg.dpo.sft_weight
    if start is not None:
        summary["resumed_from_step"] = int(start.name.split("-")[1])
    return summary
