"""Stage `train` (and the warm-up): supervised fine-tuning with TRL's SFTTrainer.

Loss is on the assistant turn only. Examples come in chat `messages` form, rendered with the
model's own chat template, so the same code trains the tiny preset and a Hub chat model.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import polars as pl

from tasks.config.recipe import TrainConfig
from tasks.data.schema import MESSAGE
from tasks.models.loading import load_tokenizer, model_fingerprint, render_prompts
from tasks.workspace.atomic import atomic_dir

log = logging.getLogger(__name__)


def seed_examples(prompts: pl.DataFrame) -> pl.DataFrame:
    """The labelled seed split as chat examples (prompt_id, messages)."""
    seed = prompts.filter((pl.col("split") == "seed") & pl.col("target").is_not_null())
    return seed.select(
        "prompt_id",
        pl.concat_list(
            pl.struct(role=pl.lit("user"), content=pl.col("text")),
            pl.struct(role=pl.lit("assistant"), content=pl.col("target")),
        ).cast(pl.List(MESSAGE)).alias("messages"),
    )


def tokenize_examples(tokenizer, messages: pl.Series, max_length: int) -> list[dict[str, list[int]]]:
    """input_ids and labels (-100 on the prompt) for each conversation's last assistant turn."""
    users = messages.list.first().struct.field("content").to_list()
    answers = messages.list.last().struct.field("content").to_list()
    prompt_ids = tokenizer(render_prompts(tokenizer, users), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer([a + tokenizer.eos_token for a in answers], add_special_tokens=False)["input_ids"]
    rows = []
    for p, a in zip(prompt_ids, answer_ids):
        ids = (p + a)[:max_length]
        rows.append({"input_ids": ids, "labels": ([-100] * len(p) + a)[:max_length]})
    return rows


def _collate(pad_id: int):
    def collate(batch: list[dict[str, list[int]]]):
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):  # right padding keeps position ids aligned for training
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def quiet_trainer(trainer) -> None:
    """Send the Trainer's loss logs to the logging module instead of printing them to stdout,
    which belongs to the command's own output (e.g. `--json`)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class LogCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            log.info("step %s: %s", state.global_step, logs)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogCallback())


def sft(init_model: str | Path, examples: pl.DataFrame, cfg: TrainConfig, seed: int, out_dir: Path,
        checkpoint_dir: Path | None = None, section: str = "train") -> dict:
    """Fine-tune `init_model` on `examples` (a `messages` column); save to `out_dir` atomically.

    Full fine-tuning, LoRA or QLoRA (`cfg.lora`) with TRL's SFTTrainer. With `cfg.checkpoint_every`
    checkpoints go to `checkpoint_dir` (default: hidden beside `out_dir`) and a re-run resumes from
    the latest one. Under a multi-process launcher every process trains; the main one saves.
    """
    from datasets import Dataset

    from tasks.models import resume

    from tasks.models import sft_setup

    if examples.height == 0:
        raise ValueError("no training examples")
    sft_setup.check_hardware(cfg, section)
    precision = sft_setup.resolve_precision(cfg, section)
    tokenizer = load_tokenizer(init_model)
    data = tokenize_examples(tokenizer, examples["messages"], cfg.max_length)
    quiet = os.environ.get("FLYWHEEL_PROGRESS") != "1" and not sys.stderr.isatty()
    ckpt_dir = Path(checkpoint_dir or resume.default_checkpoint_dir(Path(out_dir))) if cfg.checkpoint_every else None
    with tempfile.TemporaryDirectory(prefix="flywheel-train-") as scratch:
        args = sft_setup.sft_config(cfg, seed, precision, ckpt_dir or Path(scratch), quiet)
        main = args.process_index == 0
        start = None if ckpt_dir is None else resume.start_point(
            ckpt_dir, resume.run_key(model_fingerprint(init_model), data, cfg.model_dump_json(), seed), args)
        if start is not None:
            log.info("resuming training from %s", start)
        model = sft_setup.load_train_model(init_model, cfg, precision)
        trainer = sft_setup.trainer_class(cfg.fused_loss)(
            model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer,
            data_collator=_collate(tokenizer.pad_token_id),
            peft_config=sft_setup.peft_config(cfg.lora) if cfg.lora else None)
        quiet_trainer(trainer)
        result = trainer.train(resume_from_checkpoint=str(start) if start else None)
        if main:
            _save(trainer, tokenizer, init_model, cfg, Path(out_dir))
            if ckpt_dir is not None:
                resume.clear(ckpt_dir)
        args.distributed_state.wait_for_everyone()
    summary = {"train_loss": round(float(result.training_loss), 6), "examples": examples.height,
               "steps": cfg.max_steps, "tokens": int(trainer.state.num_input_tokens_seen)}
    if start is not None:  # then train_loss is the mean over the steps after the resume only
        summary["resumed_from_step"] = int(start.name.split("-")[1])
    return summary


def _save(trainer, tokenizer, init_model: str | Path, cfg: TrainConfig, out_dir: Path) -> None:
    from tasks.models.sft_setup import save_lora_output

    model = trainer.accelerator.unwrap_model(trainer.model)
    with atomic_dir(out_dir) as tmp:
        if cfg.lora is None:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        else:
            save_lora_output(model, tokenizer, init_model, out_dir, tmp)
