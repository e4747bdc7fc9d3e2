"""The SFT stage on TRL: the default path equals the plain transformers Trainer, bit for bit, and
a run killed after a checkpoint resumes to the same weights."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import polars as pl
import pytest

from tasks.config.recipe import TrainConfig
from tasks.stages.train import _collate, seed_examples, sft, tokenize_examples

ROOT = Path(__file__).resolve().parent.parent
CFG = TrainConfig(max_steps=6, batch_size=16, learning_rate=2e-3)


def _weights(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def examples(micro_assets) -> pl.DataFrame:
    _, prompts, _ = micro_assets
    return seed_examples(pl.read_parquet(prompts))


def _plain_trainer(model_dir: Path, examples: pl.DataFrame, cfg: TrainConfig, seed: int, out: Path) -> list[float]:
    """The stage as it was before TRL: transformers' Trainer with the same data, collator and arguments."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from tasks.models.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, dtype="float32")
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay, seed=seed, data_seed=seed, save_strategy="no", report_to="none",
            logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False, use_cpu=True)
        trainer = Trainer(model=model, args=args, train_dataset=tokenize_examples(tok, examples["messages"], 256),
                          data_collator=_collate(tok.pad_token_id), callbacks=[Losses()])
        trainer.train()
        trainer.model.save_pretrained(out)
    return losses


def test_default_path_is_bit_identical_to_the_plain_trainer(micro_assets, examples, tmp_path):
    _, _, base = micro_assets
    losses = _plain_trainer(base, examples, CFG, 5, tmp_path / "plain")
    result = sft(base, examples, CFG, 5, tmp_path / "trl")
    assert _weights(tmp_path / "trl") == _weights(tmp_path / "plain")
    assert result["train_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-6)
    assert losses[-1] < losses[0]  # it learns
    # and a second run gives the same bytes for the whole folder
    sft(base, examples, CFG, 5, tmp_path / "again")
    for f in (tmp_path / "trl").iterdir():
        assert f.read_bytes() == (tmp_path / "again" / f.name).read_bytes(), f.name


def test_prompt_tokens_carry_no_loss(micro_assets, examples):
    from tasks.models.loading import load_tokenizer

    tok = load_tokenizer(micro_assets[2])
    rows = tokenize_examples(tok, examples["messages"][:4], 256)
    for row, msgs in zip(rows, examples["messages"][:4].to_list()):
        answer = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
        prompt = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab == -100]
        assert tok.decode(answer) == msgs[-1]["content"] + tok.eos_token
        assert msgs[0]["content"] in tok.decode(prompt)
        assert row["labels"][: len(prompt)] == [-100] * len(prompt)


def test_fused_loss_matches_within_float_rounding(micro_assets, examples, tmp_path):
    from safetensors.torch import load_file

    _, _, base = micro_assets
    a = sft(base, examples, CFG, 5, tmp_path / "std")
    b = sft(base, examples, CFG.model_copy(update={"fused_loss": True}), 5, tmp_path / "fused")
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    wa, wb = load_file(tmp_path / "std" / "model.safetensors"), load_file(tmp_path / "fused" / "model.safetensors")
    assert all((wa[k] - wb[k]).abs().max() < 1e-4 for k in wa)


def test_bf16_on_cpu_trains_and_fp16_on_cpu_is_a_clear_error(micro_assets, examples, tmp_path):
    from tasks.errors import ConfigError

    _, _, base = micro_assets
    cfg = CFG.model_copy(update={"max_steps": 2})
    res = sft(base, examples, cfg.model_copy(update={"precision": "bf16"}), 5, tmp_path / "bf16")
    assert res["train_loss"] > 0 and (tmp_path / "bf16" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match=r"warmup\.precision: fp16 .*needs a CUDA GPU"):
        sft(base, examples, cfg.model_copy(update={"precision": "fp16"}), 5, tmp_path / "fp16", section="warmup")


def test_gradient_checkpointing_gives_the_same_model(micro_assets, examples, tmp_path):
    from safetensors.torch import load_file

    _, _, base = micro_assets
    sft(base, examples, CFG, 5, tmp_path / "plain")
    sft(base, examples, CFG.model_copy(update={"gradient_checkpointing": True}), 5, tmp_path / "gc")
    wa, wb = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "gc" / "model.safetensors")
    assert all((wa[k] - wb[k]).abs().max() < 1e-5 for k in wa)


KILL_AFTER_SAVE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import polars as pl
    from transformers import TrainerCallback
    import tasks.stages.train as train
    from tasks.config.recipe import TrainConfig

    class Preempt(TrainerCallback):  # the machine goes away right after the first checkpoint is on disk
        def on_save(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    quiet = train.quiet_trainer
    train.quiet_trainer = lambda t: (quiet(t), t.add_callback(Preempt()))
    base, examples, cfg, out, ckpt = sys.argv[1:6]
    train.sft(base, pl.read_parquet(examples), TrainConfig.model_validate_json(cfg), 5, Path(out),
              checkpoint_dir=Path(ckpt))
""")


def test_resume_after_a_kill_gives_the_uninterrupted_weights(micro_assets, examples, tmp_path):
    from tasks.models.resume import KEY_FILE

    _, _, base = micro_assets
    cfg = CFG.model_copy(update={"checkpoint_every": 2})
    examples.write_parquet(tmp_path / "examples.parquet")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_SAVE, str(base), str(tmp_path / "examples.parquet"),
                           cfg.model_dump_json(), str(out), str(ckpt)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists() and (ckpt / "checkpoint-2" / "trainer_state.json").is_file()
    assert (ckpt / KEY_FILE).is_file()

    resumed = sft(base, examples, cfg, 5, out, checkpoint_dir=ckpt)
    assert resumed["resumed_from_step"] == 2  # the global step did not restart
    assert not ckpt.exists()  # removed once the final model is saved

    straight = sft(base, examples, CFG, 5, tmp_path / "straight")  # no checkpoints at all
    assert _weights(out) == _weights(tmp_path / "straight")
    assert 0 < resumed["train_loss"] < straight["train_loss"]  # the mean of steps 3-6 only: later, lower losses


def test_checkpoints_of_another_run_are_not_resumed(micro_assets, examples, tmp_path):
    _, _, base = micro_assets
    ckpt = tmp_path / "ckpt"
    (ckpt / "checkpoint-4").mkdir(parents=True)
    (ckpt / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (ckpt / "run-key").write_text("some other run")
    res = sft(base, examples, CFG.model_copy(update={"checkpoint_every": 3}), 5, tmp_path / "out", checkpoint_dir=ckpt)
    assert "resumed_from_step" not in res and not ckpt.exists()


def test_length_grouped_batches_pad_less_and_stay_deterministic(micro_assets, examples, tmp_path):
    """`sampling: group_by_length` builds batches of similar length (less padding per step) and is
    seeded like the random sampler, so a re-run is bit-identical."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from tasks.models.loading import load_tokenizer

    _, _, model = micro_assets
    rows = tokenize_examples(load_tokenizer(model), examples["messages"], 256)
    lengths = [len(r["input_ids"]) for r in rows]
    # batches of 4: the sampler sorts mega-batches of 4 batches by length (64 examples here)
    order = list(LengthGroupedSampler(4, lengths=lengths))
    batches = [order[i:i + 4] for i in range(0, len(order), 4)]

    def padded(batch_list):
        return sum(max(lengths[i] for i in b) * len(b) for b in batch_list)

    random_batches = [list(range(len(rows)))[i:i + 4] for i in range(0, len(rows), 4)]
    assert sorted(order) == list(range(len(rows))) and padded(batches) < padded(random_batches)
    cfg = CFG.model_copy(update={"sampling": "group_by_length"})
    sft(model, examples, cfg, 3, tmp_path / "a")
    sft(model, examples, cfg, 3, tmp_path / "b")
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b")
