"""tasks/stages/dpo.py: DPO on preference pairs with TRL's DPOTrainer, the parent as reference; bit-identical
re-runs on CPU, checkpoints included, and it moves the policy towards the chosen answers."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from tasks.config.recipe import LoraConfig, TrainConfig
from tasks.data.schema import PAIRS, conform
from tasks.stages.dpo import dpo

ROOT = Path(__file__).resolve().parent.parent
CFG = TrainConfig(objective="dpo", max_steps=4, batch_size=8, learning_rate=5e-3, dpo={"beta": 0.5})


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pairs(micro_assets) -> pl.DataFrame:
    """Seed prompts: the gold chain is chosen, the same chain with a wrong final answer rejected."""
    _, prompts, _ = micro_assets
    seed = pl.read_parquet(prompts).filter(pl.col("split") == "seed").head(16)
    return conform(seed.select(
        "prompt_id", prompt="text", chosen="target",
        rejected=pl.col("target").str.replace(r"Answer: (\d+)", "Answer: 1${1}"),
        chosen_idx=pl.lit(0), rejected_idx=pl.lit(1), margin=pl.lit(1.0)), PAIRS)


def _logp(model_dir: Path, pairs: pl.DataFrame) -> float:
    """Mean log-probability margin of chosen over rejected answers under a model."""
    chosen, rejected = _answer_logps(model_dir, pairs)
    return chosen - rejected


def _answer_logps(model_dir: Path, pairs: pl.DataFrame) -> tuple[float, float]:
    """Mean log-probability of the chosen and of the rejected answers under a model."""
    import torch

    from tasks.models.loading import load_causal_lm, load_tokenizer, render_prompts

    tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir, dtype="float32", device="cpu")
    chosen = rejected = 0.0
    for p, c, r in zip(render_prompts(tok, pairs["prompt"].to_list()), pairs["chosen"], pairs["rejected"]):
        n = len(tok(p)["input_ids"])
        lp = []
        for answer in (c, r):
            ids = torch.tensor([tok(p + answer)["input_ids"]])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].log_softmax(-1)
            lp.append(logits[n - 1:].gather(1, ids[0, n:, None]).sum().item())
        chosen, rejected = chosen + lp[0], rejected + lp[1]
    return chosen / pairs.height, rejected / pairs.height


def test_dpo_reproduces_bit_for_bit_and_prefers_the_chosen_answers(micro_assets, pairs, tmp_path):
    _, _, base = micro_assets
    a = dpo(base, pairs, CFG, 3, tmp_path / "a")
    b = dpo(base, pairs, CFG, 3, tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert a == b and a["objective"] == "dpo" and a["pairs"] == 16
    other = dpo(base, pairs, CFG.model_copy(update={"dpo": CFG.dpo.model_copy(update={"beta": 0.1})}), 3,
                tmp_path / "c")
    assert _files(tmp_path / "c")["model.safetensors"] != _files(tmp_path / "a")["model.safetensors"]
    assert other["beta"] == 0.1
    assert _logp(tmp_path / "a", pairs) > _logp(Path(base), pairs)


def test_dpo_with_an_sft_term_keeps_the_chosen_answers_likely_and_reproduces(micro_assets, pairs, tmp_path):
    """train.dpo.sft_weight adds TRL's NLL loss on the chosen answer (Iterative RPO): pure DPO may push both
    answers down, the extra term holds the chosen one up; still bit-identical on a re-run."""
    from tasks.stages.dpo import dpo_config

    _, _, base = micro_assets
    rpo = CFG.model_copy(update={"dpo": CFG.dpo.model_copy(update={"sft_weight": 1.0})})
    args = dpo_config(rpo, 3, "fp32", tmp_path / "args", quiet=True)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 1.0]
    assert dpo_config(CFG, 3, "fp32", tmp_path / "args", quiet=True).loss_type == ["sigmoid"]
    plain = dpo(base, pairs, CFG, 3, tmp_path / "plain")
    a = dpo(base, pairs, rpo, 3, tmp_path / "a")
    b = dpo(base, pairs, rpo, 3, tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b") and a == b and a["sft_weight"] == 1.0
    assert "sft_weight" not in plain
    chosen_rpo, _ = _answer_logps(tmp_path / "a", pairs)
    chosen_plain, _ = _answer_logps(tmp_path / "plain", pairs)
    assert chosen_rpo > chosen_plain
    assert _logp(tmp_path / "a", pairs) > _logp(Path(base), pairs)  # still prefers the chosen answers


KILL_AFTER_SAVE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import polars as pl
    from transformers import TrainerCallback
    import tasks.stages.train as train
    from tasks.config.recipe import TrainConfig
    from tasks.stages.dpo import dpo

    class Preempt(TrainerCallback):  # the machine goes away right after the first checkpoint is on disk
        def on_save(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    quiet = train.quiet_trainer
    train.quiet_trainer = lambda t: (quiet(t), t.add_callback(Preempt()))
    base, pairs, cfg, out, ckpt = sys.argv[1:6]
    dpo(base, pl.read_parquet(pairs), TrainConfig.model_validate_json(cfg), 3, Path(out), checkpoint_dir=Path(ckpt))
""")


def test_dpo_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(micro_assets, pairs, tmp_path):
    _, _, base = micro_assets
    cfg = CFG.model_copy(update={"checkpoint_every": 2})
    pairs.write_parquet(tmp_path / "pairs.parquet")
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_SAVE, str(base), str(tmp_path / "pairs.parquet"),
                           cfg.model_dump_json(), str(out), str(ckpt)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists() and (ckpt / "checkpoint-2" / "trainer_state.json").is_file()
    resumed = dpo(base, pairs, cfg, 3, out, checkpoint_dir=ckpt)
    assert resumed["resumed_from_step"] == 2 and not ckpt.exists()
    dpo(base, pairs, CFG, 3, tmp_path / "straight")
    assert _files(out) == _files(tmp_path / "straight")


def test_dpo_with_lora_trains_an_adapter(micro_assets, pairs, tmp_path):
    _, _, base = micro_assets
    cfg = CFG.model_copy(update={"lora": LoraConfig(r=4, alpha=8, dropout=0.0)})
    dpo(base, pairs, cfg, 3, tmp_path / "lora")
    dpo(base, pairs, cfg, 3, tmp_path / "lora2")
    assert _files(tmp_path / "lora") == _files(tmp_path / "lora2")
    assert _files(tmp_path / "lora")["model.safetensors"] != _files(Path(base))["model.safetensors"]
