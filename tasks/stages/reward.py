"""Reward models: a Hugging Face sequence-classification model scores (prompt, sample) pairs.

ORM: one score for the whole sample. PRM: the minimum over the chain's step prefixes.
Rewards are clipped to [-1, 1]. The embedded default trains a tiny ORM on verified
iteration-0 samples (stage `reward`), versioned like any other model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from tasks.config.recipe import Recipe, RewardConfig
from tasks.models.loading import load_tokenizer, render_prompts, resolve_model_ref
from tasks.stages.train import quiet_trainer
from tasks.workspace.atomic import atomic_dir, read_json

MARKER = "reward.json"
# Rows per forward pass. Padding differs by batch, so a row's reward depends (in the last bits) on
# its batch: sharded scoring cuts shards on these boundaries (tasks/placement/shards.py).
SCORE_BATCH = 128


def reward_enabled(model_dir: Path) -> bool:
    marker = model_dir / MARKER
    return not marker.is_file() or read_json(marker).get("enabled", True)


class RewardScorer:
    def __init__(self, model_dir: Path, kind: str = "orm", batch_size: int = SCORE_BATCH) -> None:
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(resolve_model_ref(model_dir)).eval()
        self.kind, self.batch_size = kind, batch_size

    def _score_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=False, truncation=True, max_length=512)
            with torch.inference_mode():
                out.append(self.model(**enc).logits[:, 0].float().numpy())
        return np.clip(np.concatenate(out) if out else np.zeros(0), -1.0, 1.0)

    def score(self, questions: list[str], samples: list[str]) -> np.ndarray:
        prompts = render_prompts(self.tokenizer, questions)
        if self.kind == "orm":
            return self._score_texts([p + s for p, s in zip(prompts, samples)])
        # PRM: score every step prefix, keep the minimum per sample
        frame = (pl.DataFrame({"i": range(len(samples)), "p": prompts, "steps": pl.Series(samples).str.split(". ")})
                 .with_columns(j=pl.int_ranges(1, pl.col("steps").list.len() + 1)).explode("j")
                 .with_columns(text=pl.col("p") + pl.col("steps").list.head(pl.col("j")).list.join(". ")))
        frame = frame.with_columns(r=pl.Series(self._score_texts(frame["text"].to_list())))
        return frame.group_by("i").agg(pl.col("r").min()).sort("i")["r"].to_numpy()


def add_rewards(scored: pl.DataFrame, prompts: pl.DataFrame, model_dir: Path | None, cfg: RewardConfig,
                scorer: RewardScorer | None = None) -> pl.DataFrame:
    """Fill `reward` and recompute `score = correct + weight * reward` (`scorer`: an already loaded model)."""
    if model_dir is None or not reward_enabled(model_dir):
        rewards = pl.lit(None, pl.Float64)
    else:
        joined = scored.select("prompt_id", "text").join(prompts.select("prompt_id", pl.col("text").alias("q")),
                                                         on="prompt_id", how="left", maintain_order="left")
        scorer = scorer or RewardScorer(model_dir, cfg.kind)
        rewards = pl.Series(scorer.score(joined["q"].to_list(), joined["text"].to_list()))
    return with_score(scored.with_columns(reward=rewards), cfg)


def with_score(scored: pl.DataFrame, cfg: RewardConfig) -> pl.DataFrame:
    """score = correct + weight * reward, computed as reward.arithmetic says (a null reward counts 0).

    float32 (unset): the product in the reward's own dtype, float32 from a reward model, so 0.2 * 1.0
    gives 0.2000000030 and passes a 0.2 threshold; kept for workspaces recorded that way."""
    reward = pl.col("reward")
    if cfg.arithmetic == "reference":
        from tasks.metrics.bstar_reference import reward_fifth

        term = reward_fifth(reward)
    elif cfg.arithmetic == "float64":
        term = reward.cast(pl.Float64) * cfg.weight
    else:
        term = cfg.weight * reward
    return scored.with_columns(score=pl.col("correct").cast(pl.Float64) + term.fill_null(0.0))


def train_orm(policy_dir: Path, examples: pl.DataFrame, cfg: RewardConfig, seed: int, out_dir: Path) -> dict:
    """Regress +1 (verified correct) / -1 (incorrect) from the policy's own backbone."""
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments, set_seed

    tokenizer = load_tokenizer(policy_dir)
    set_seed(seed)  # the new score head's initial weights come from the global RNG: never from what ran before
    model = AutoModelForSequenceClassification.from_pretrained(str(policy_dir), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    texts = [p + s for p, s in zip(render_prompts(tokenizer, examples["q"].to_list()), examples["text"].to_list())]
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=512)["input_ids"]
    labels = (examples["correct"].cast(pl.Float64) * 2 - 1).to_list()
    data = [{"input_ids": i, "labels": float(y)} for i, y in zip(ids, labels)]

    def collate(batch):
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        x = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(x)
        for row, b in enumerate(batch):
            x[row, :len(b["input_ids"])] = torch.tensor(b["input_ids"])
            mask[row, :len(b["input_ids"])] = 1
        return {"input_ids": x, "attention_mask": mask, "labels": torch.tensor([b["labels"] for b in batch])}

    import tempfile

    with tempfile.TemporaryDirectory(prefix="flywheel-orm-") as scratch:
        args = TrainingArguments(output_dir=scratch, max_steps=cfg.train_steps, per_device_train_batch_size=cfg.batch_size,
                                 learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", seed=seed, data_seed=seed,
                                 save_strategy="no", report_to="none", disable_tqdm=True, remove_unused_columns=False,
                                 use_cpu=model.device.type == "cpu", logging_steps=max(1, cfg.train_steps // 5))
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
        quiet_trainer(trainer)
        result = trainer.train()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {"reward_train_loss": round(float(result.training_loss), 6), "examples": len(data),
            "positive_rate": round(float(examples["correct"].mean()), 6)}


def build_reward_model(recipe: Recipe, policy_dir: Path, prompts_path: Path, seed: int, out_dir: Path) -> dict:
    """Stage `reward`: none (a marker), a snapshot of a pretrained model, or a tiny ORM trained here."""
    cfg = recipe.reward
    if cfg.source in ("none", "judge"):  # the judge is the policy itself, run by the score stage
        with atomic_dir(out_dir) as tmp:
            (tmp / MARKER).write_text(json.dumps({"enabled": False}) + "\n")
        return {"reward": "none"}
    if cfg.source == "pretrained":
        src = Path(resolve_model_ref(cfg.name_or_path, field="reward.name_or_path"))
        with atomic_dir(out_dir) as tmp:
            if src.is_dir():
                shutil.copytree(src, tmp, dirs_exist_ok=True)
            else:
                from transformers import AutoModelForSequenceClassification

                AutoModelForSequenceClassification.from_pretrained(str(src)).save_pretrained(tmp)
                load_tokenizer(str(src)).save_pretrained(tmp)
        return {"reward": str(cfg.name_or_path)}
    from tasks.stages.generate import pool_prompts, sample_prompts
    from tasks.verify.verifiers import make_verifier

    prompts = pl.read_parquet(prompts_path)
    pool = pool_prompts(prompts, recipe.pool.model_copy(update={"prompts_per_iteration": cfg.train_prompts}), 1, seed)
    samples = sample_prompts(policy_dir, pool, recipe.generate, temperature=recipe.generate.temperature,
                             k=cfg.train_k, seed=seed, iteration="0000", desc="reward-model samples")
    verifier = make_verifier(recipe.verifier.type, recipe.verifier)
    verified = verifier.verify(samples, pool.select("prompt_id", "text", "answer"))
    examples = verified.join(pool.select("prompt_id", pl.col("text").alias("q")), on="prompt_id").sort(
        "prompt_id", "sample_idx")
    return train_orm(policy_dir, examples, cfg, seed, out_dir)
