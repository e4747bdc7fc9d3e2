"""Stage `train` (and the warm-up): supervised fine-tuning with the transformers Trainer.

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

from tasks.atomic import atomic_dir
from tasks.config import TrainConfig
from tasks.modeling import load_causal_lm, load_tokenizer, render_prompts
from tasks.schema import MESSAGE

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


def sft(init_model: str | Path, examples: pl.DataFrame, cfg: TrainConfig, seed: int, out_dir: Path) -> dict:
    """Fine-tune `init_model` on `examples` (a `messages` column); save to `out_dir` atomically."""
    from transformers import Trainer, TrainingArguments

    if examples.height == 0:
        raise ValueError("no training examples")
    tokenizer = load_tokenizer(init_model)
    model = load_causal_lm(init_model, dtype="float32")
    data = tokenize_examples(tokenizer, examples["messages"], cfg.max_length)
    quiet = os.environ.get("FLYWHEEL_PROGRESS") != "1" and not sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="flywheel-train-") as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay, seed=seed, data_seed=seed, save_strategy="no", report_to="none",
            logging_steps=max(1, cfg.max_steps // 10), disable_tqdm=quiet, dataloader_num_workers=0,
            remove_unused_columns=False, use_cpu=model.device.type == "cpu",
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=_collate(tokenizer.pad_token_id))
        quiet_trainer(trainer)
        result = trainer.train()
    with atomic_dir(out_dir) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {"train_loss": round(float(result.training_loss), 6), "examples": examples.height,
            "steps": cfg.max_steps}
