"""Recipes whose sections contradict each other, or that their prompts cannot satisfy. Run by
preflight, so `flywheel init` and every run refuse them before any compute, naming the fields.

`check_recipe` needs the recipe only; `check_prompts` also reads the prompt rows of a file source.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from tasks.config.recipe import ArithSource, FileSource, HubSource, MBPPSource, PretrainedInit, Recipe, TinyLlamaInit
from tasks.errors import ConfigError, InputDataError

# The tiny model's tokenizer has one token per character, and its chat template (tasks/models/tiny_model.py)
# adds "\nA:" after the prompt, so its prompt length in tokens is exact without loading anything.
TINY_TEMPLATE_TOKENS = 3
# Other models: a bound in characters, since tokenizing every prompt at init means loading the
# tokenizer (often from the Hub). English BPE text runs at about 4 characters per token and almost
# nothing above 6, so a prompt with 10 characters per context token cannot fit any common tokenizer.
CHARS_PER_TOKEN_BOUND = 10


def model_context(recipe: Recipe) -> tuple[int, str] | None:
    """The model's context in tokens and the field that sets it, when known without loading the model."""
    init, max_len = recipe.model.init, recipe.generate.vllm.max_model_len
    if isinstance(init, TinyLlamaInit):
        if max_len and max_len < init.max_position_embeddings:
            return max_len, "generate.vllm.max_model_len"
        return init.max_position_embeddings, "model.init.max_position_embeddings"
    if max_len:
        return max_len, "generate.vllm.max_model_len"
    config = Path(init.name_or_path).expanduser() / "config.json" if isinstance(init, PretrainedInit) else None
    if config is not None and config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        n = data.get("max_position_embeddings") or (data.get("text_config") or {}).get("max_position_embeddings")
        return (int(n), "model.init.name_or_path") if n else None
    return None


# ---------------------------------------------------------------- recipe only
def _source_difficulties(recipe: Recipe) -> list[int] | None:
    """Difficulties the source can produce: a list, or None when only its rows can tell."""
    src = recipe.prompts.source
    if isinstance(src, ArithSource):
        return list(range(1, src.max_steps + 1))
    if isinstance(src, MBPPSource):
        return []
    if not src.difficulty_column:
        return []
    return None


def _max_selected(recipe: Recipe, pool_size: int | None) -> int | None:
    """Most training examples one iteration's select can keep: prompts x distinct samples kept each."""
    k = recipe.allocation.k_max if recipe.allocation.enabled else recipe.generate.k  # adaptive K: the most one gets
    per_prompt = min(recipe.select.cap_per_prompt, k) if recipe.select.mode == "sft" else \
        min(recipe.select.pairs.max_per_prompt, k * k)
    sizes = [n for n in (recipe.pool.prompts_per_iteration, pool_size) if n is not None]
    return min(sizes) * per_prompt if sizes else None


def _budget_error(recipe: Recipe, most: int, where: str) -> ConfigError:
    return ConfigError(
        f"an iteration can select at most {most} examples ({where} x min(select.cap_per_prompt "
        f"{recipe.select.cap_per_prompt}, generate.k {recipe.generate.k})), fewer than the {recipe.check.min_selected} "
        "this asks for, so the data gate can never pass.", field="check.min_selected",
        fix=f"lower check.min_selected to {most} or less, or raise pool.prompts_per_iteration or "
            "select.cap_per_prompt.")


def check_recipe(recipe: Recipe) -> None:
    """Contradictions visible in the recipe alone."""
    src, schedule = recipe.prompts.source, recipe.pool.difficulty_schedule
    produced = _source_difficulties(recipe)
    if schedule and produced is not None:
        asked = sorted({d for entry in schedule for d in entry} - set(produced))
        if asked:
            made = (f"the arith generator makes {produced[0]}-{produced[-1]} (prompts.source.max_steps "
                    f"{produced[-1]})" if isinstance(src, ArithSource) else
                    "mbpp prompts have no difficulty" if isinstance(src, MBPPSource) else
                    "prompts.source.difficulty_column is not set")
            fix = ("raise prompts.source.max_steps or drop those difficulties from the schedule."
                   if isinstance(src, ArithSource) else "set pool.difficulty_schedule: null (sample the whole pool)"
                   + ("" if isinstance(src, MBPPSource) else " or set prompts.source.difficulty_column") + ".")
            raise ConfigError(f"asks for difficulty {asked}, but {made}.",
                              field="pool.difficulty_schedule", fix=fix)
    if isinstance(src, HubSource):
        if recipe.warmup.enabled and "seed" not in src.splits:
            raise ConfigError("has no seed entry, but warmup.enabled needs labelled seed prompts.",
                              field="prompts.source.splits",
                              fix="add e.g. seed: 'train[:1000]', or set warmup.enabled: false.")
        if recipe.calibrate.enabled and "probe" not in src.splits:
            raise ConfigError("has no probe entry, but calibrate.enabled needs probe prompts.",
                              field="prompts.source.splits",
                              fix="add e.g. probe: 'train[1000:1200]', or set calibrate.enabled: false.")
    if isinstance(src, ArithSource):
        per_round = [src.train_size_per_steps * len(set(e) & set(produced)) for e in schedule] if schedule else \
            [src.train_size_per_steps * src.max_steps]
        for i, n in enumerate(per_round, 1):
            most = _max_selected(recipe, n)
            if most < recipe.check.min_selected:
                raise _budget_error(recipe, most, f"round {i}: {min(n, recipe.pool.prompts_per_iteration or n)} "
                                                  "pool prompts")
    else:
        most = _max_selected(recipe, None)
        if most is not None and most < recipe.check.min_selected:
            raise _budget_error(recipe, most, f"pool.prompts_per_iteration {recipe.pool.prompts_per_iteration}")
    check_methods(recipe)
    check_hints(recipe)
    check_allocation(recipe)
    check_reference_options(recipe)
    if recipe.check.min_text_chars > recipe.check.max_text_chars:
        raise ConfigError(f"{recipe.check.min_text_chars} is above check.max_text_chars "
                          f"({recipe.check.max_text_chars}), so no sample can pass the gate.",
                          field="check.min_text_chars", fix="make min_text_chars at most max_text_chars.")


def check_methods(recipe: Recipe) -> None:
    """The training objective must match what select writes, and DPO's reference must be the init model."""
    dpo, pairs = recipe.train.objective == "dpo", recipe.select.mode == "pairs"
    if dpo and not pairs:
        raise ConfigError("is dpo, which trains on preference pairs, but select.mode is sft.",
                          field="train.objective", fix="set select.mode: pairs, or train.objective: sft.")
    if pairs and not dpo:
        raise ConfigError("is pairs, but train.objective sft cannot train on preference pairs.",
                          field="select.mode", fix="set train.objective: dpo, or select.mode: sft.")
    if recipe.reward.source == "judge" and recipe.scale.runner != "local":
        raise ConfigError("is judge, which runs in the score stage's own process, but scale.runner shards the "
                          "score stage.", field="reward.source",
                          fix="set scale.runner: local, or use another reward source.")
    if dpo and recipe.train.mode == "restart":
        raise ConfigError("is restart, but DPO's reference model is the parent, and restart trains from "
                          "iteration 0 instead.", field="train.mode", fix="use train.mode: continue with dpo.")
    if recipe.verifier.type == "none":
        check_judge_only(recipe)


def check_reference_options(recipe: Recipe) -> None:
    """The B-STaR reference-code options need balancing, and injection needs reference solutions."""
    cal = recipe.calibrate
    if cal.threshold_from == "full" and not cal.enabled:
        raise ConfigError("is full, but the threshold is re-swept at the temperature calibration chose, and "
                          "calibrate.enabled is false.", field="calibrate.threshold_from",
                          fix="set calibrate.enabled: true, or threshold_from: probe.")
    if cal.fidelity == "reference" and recipe.reward.arithmetic not in (None, "reference"):
        raise ConfigError(f"is {recipe.reward.arithmetic}, but calibrate.fidelity reference scores as the B-STaR "
                          "reference code does (correct + reward / 5, float64).", field="reward.arithmetic",
                          fix="remove reward.arithmetic (init records reference), or set calibrate.fidelity: ours.")
    if cal.inject_reference == "none":
        return
    if not isinstance(recipe.prompts.source, ArithSource):
        raise ConfigError(f"is {cal.inject_reference}, but only the arith source has a reference solution for "
                          "every probe and pool prompt (other sources keep solutions on seed rows only).",
                          field="calibrate.inject_reference", fix="set calibrate.inject_reference: none.")
    if recipe.verifier.type == "majority_vote":
        raise ConfigError(f"is {cal.inject_reference}, but a reference solution is gold, and majority_vote "
                          "runs without gold.", field="calibrate.inject_reference",
                          fix="set calibrate.inject_reference: none, or use a gold verifier.")
    if cal.inject_reference == "train" and recipe.select.mode == "pairs":
        raise ConfigError("is train, but select.mode pairs builds preference pairs from samples only.",
                          field="calibrate.inject_reference", fix="use inject_reference: balance or none.")


def _pool_sizes(recipe: Recipe) -> list[int]:
    """Pool prompts per curriculum round, where the recipe alone tells (the arith generator, or a set
    pool.prompts_per_iteration); the generate stage checks the rest against the real pool."""
    src, schedule, most = recipe.prompts.source, recipe.pool.difficulty_schedule, recipe.pool.prompts_per_iteration
    if isinstance(src, ArithSource):
        levels = set(range(1, src.max_steps + 1))
        sizes = [src.train_size_per_steps * len(set(e) & levels) for e in schedule] if schedule else \
            [src.train_size_per_steps * src.max_steps]
        return [min(n, most or n) for n in sizes]
    return [most] if most else []


def check_allocation(recipe: Recipe) -> None:
    """Adaptive K: bounds in order, a budget that covers k_min for every pool prompt, and generation the
    per-prompt sample counts can be sharded for."""
    a = recipe.allocation
    if not a.enabled:
        return
    if a.k_min > a.k_max:
        raise ConfigError(f"is {a.k_min}, above allocation.k_max {a.k_max}.", field="allocation.k_min",
                          fix="make k_min at most k_max.")
    if a.budget is None and a.k_min > recipe.generate.k:
        raise ConfigError(f"is {a.k_min}, above generate.k {recipe.generate.k}, which sets the budget (pool prompts "
                          "x generate.k) when allocation.budget is null.", field="allocation.k_min",
                          fix=f"lower allocation.k_min to {recipe.generate.k} or less, or set allocation.budget.")
    share = recipe.hints.reserve if recipe.hints.enabled else 0.0
    for i, n in enumerate(_pool_sizes(recipe), 1):
        budget = a.budget if a.budget is not None else n * recipe.generate.k
        reserve = round(share * budget)  # as tasks/stages/generate.py's hint_reserve takes it
        if budget - reserve < n * a.k_min:
            kept = f" less hints.reserve's {reserve}" if reserve else ""
            raise ConfigError(f"is {budget}{kept}, but round {i} has {n} pool prompts and each gets at least "
                              f"allocation.k_min {a.k_min}, so {n * a.k_min + reserve} at the least.",
                              field="allocation.budget",
                              fix=f"raise allocation.budget to {n * a.k_min + reserve} or more, or lower "
                                  "allocation.k_min, hints.reserve or pool.prompts_per_iteration.")
    if recipe.scale.runner != "local" and recipe.generate.backend == "hf":
        raise ConfigError("is on with scale.runner dask and generate.backend hf: per-prompt sample counts change "
                          "the HF batches that shards are cut along.", field="allocation.enabled",
                          fix="use generate.backend: vllm (seeded per prompt, so any cut reproduces), or "
                              "scale.runner: local.")


def check_hints(recipe: Recipe) -> None:
    """The hint pass verifies against gold, trains sft examples, and needs a hint its prompts can take."""
    h = recipe.hints
    if not h.enabled:
        return
    if recipe.verifier.type in ("majority_vote", "none"):
        raise ConfigError(f"is on, but verifier.type {recipe.verifier.type} has no gold to tell which prompts the "
                          "first pass left unsolved (and hinted samples would sway the vote).", field="hints.enabled",
                          fix="use a gold verifier, or set hints.enabled: false.")
    if recipe.select.mode == "pairs":
        raise ConfigError("is on, but select.mode pairs builds preference pairs that do not carry the sample's "
                          "origin.", field="hints.enabled", fix="use select.mode: sft, or set hints.enabled: false.")
    if h.reserve and not recipe.allocation.enabled:
        raise ConfigError(f"is {h.reserve}, a share of the adaptive-K budget, but allocation.enabled is false, so "
                          "there is no budget to keep it from.", field="hints.reserve",
                          fix="set hints.reserve: 0 (the pass adds its samples), or allocation.enabled: true.")
    src = recipe.prompts.source
    if h.kinds == ["partial"] and h.partial.source == "arith" and not isinstance(src, ArithSource):
        raise ConfigError("is [partial] with hints.partial.source arith, which rebuilds solutions in the arith "
                          "generator's grammar only, but the prompts come from another source.", field="hints.kinds",
                          fix="add answer or socratic to hints.kinds, or set hints.partial.source: target.")
    if h.kinds == ["answer"] and isinstance(src, FileSource) and not src.answer_column:
        raise ConfigError("is [answer], but the prompts file has no answer_column, so no prompt has a gold answer "
                          "to hint with.", field="hints.kinds", fix="add partial or socratic to hints.kinds.")


def check_judge_only(recipe: Recipe) -> None:
    """Verifier `none`: the judge's 1-5 score is all there is, so it must run, and select on it."""
    if recipe.reward.source != "judge":
        raise ConfigError(f"is none, so nothing would score the samples (reward.source is {recipe.reward.source}).",
                          field="verifier.type", fix="set reward.source: judge (the model rates its own samples), "
                                                     "or choose a verifier.")
    if recipe.calibrate.enabled:
        raise ConfigError("is on, but calibration balances a verifier's correctness on the probe set, and the "
                          "judge does not run there (verifier.type is none).", field="calibrate.enabled",
                          fix="set calibrate.enabled: false (select.threshold then applies to the judge's score).")
    t = recipe.select.threshold
    if not 1 <= t < 5:
        keeps = "every judged sample" if t < 1 else "no sample"
        raise ConfigError(f"is {t}, but with verifier.type none it applies to the judge's 1-5 score, so it keeps "
                          f"{keeps}.", field="select.threshold",
                          fix="set select.threshold between 1 and 5, e.g. 3.5 keeps samples rated 4 or 5.")


# ---------------------------------------------------------------- recipe and prompt rows
def _row_name(row: dict, source: str) -> str:
    if row.get("_row") is not None:
        return f"row {row['_row']} of {row.get('_file') or source}"
    return f"prompt {row['text'][:40]!r}"


def _check_lengths(recipe: Recipe, prompts: pl.DataFrame, source: str) -> None:
    ctx = model_context(recipe)
    if ctx is None:
        return
    tokens, field = ctx
    if isinstance(recipe.model.init, TinyLlamaInit):
        over = prompts.filter(pl.col("text").str.len_chars() + TINY_TEMPLATE_TOKENS >= tokens)
        what = f"{TINY_TEMPLATE_TOKENS} template tokens + one token per character"
    else:
        over = prompts.filter(pl.col("text").str.len_chars() > CHARS_PER_TOKEN_BOUND * tokens)
        what = f"over {CHARS_PER_TOKEN_BOUND} characters per context token"
    if over.height:
        row = over.sort("_row" if "_row" in over.columns else "text").row(0, named=True)
        raise InputDataError(
            f"{_row_name(row, source)}: the prompt has {len(row['text'])} characters ({what}), beyond the model's "
            f"context of {tokens} tokens ({field}); {over.height} prompt(s) in all.", file=source, field=field,
            fix=f"shorten or drop those prompts, check that text_column maps the prompt, or raise {field}.")


def _check_warmup(recipe: Recipe, prompts: pl.DataFrame, source: str) -> None:
    if not recipe.warmup.enabled:
        return
    src = recipe.prompts.source
    seed = prompts.filter(pl.col("split") == "seed")
    labelled = seed.filter(pl.col("target").is_not_null()).height
    carved = isinstance(src, FileSource) and src.splits is not None
    # A carve is sized for the user, so hold it to one warm-up batch; a seed split the user made
    # themselves is refused only when the warm-up would have nothing to train on.
    need = recipe.warmup.batch_size if carved else 1
    if labelled >= need:
        return
    has = "_labelled" if "_labelled" in prompts.columns else "target"  # before the format kept seed targets only
    with_target = prompts.filter(pl.col(has)).height if has == "_labelled" else \
        prompts.filter(pl.col("target").is_not_null()).height
    if isinstance(src, FileSource) and not src.target_column:
        fix = "set prompts.source.target_column to the column of worked solutions, or set warmup.enabled: false."
    elif carved:
        share = src.splits.get("seed")
        # a share carves a random-like subset: ask for a fifth more than the bare ratio
        bigger = (f"raise splits.seed to about {min(math.ceil(120 * need / max(with_target, 1)) / 100, 0.95)}"
                  if not isinstance(share, int) else f"raise splits.seed to {need}")
        fix = f"{bigger}, lower warmup.batch_size to {max(labelled, 1)}, or set warmup.enabled: false."
    else:
        fix = "give the seed split rows with a target, or set warmup.enabled: false."
    field = "prompts.source.splits.seed" if carved else "warmup.enabled"
    raise InputDataError(
        f"the warm-up needs {need} labelled seed row(s){' (warmup.batch_size)' if carved else ''}, but the seed "
        f"split has {labelled} with a target ({seed.height} seed rows; {with_target} of {prompts.height} rows have "
        "a target).", file=source, field=field, fix=fix)


def check_prompts(recipe: Recipe, prompts: pl.DataFrame, source: str) -> None:
    """Contradictions between the recipe and the prompt rows (after the answer format is applied)."""
    counts = dict(prompts.group_by("split").len().iter_rows())
    needs = [("test", "evaluate (held-out pass@1)", True), ("train", "the pool (pool section)", True),
             ("probe", "calibrate.enabled", recipe.calibrate.enabled)]
    for split, who, needed in needs:
        if needed and not counts.get(split):
            raise InputDataError(f"no {split} prompts, but {who} needs them.", file=source, field="split",
                                 fix=f"add {split} rows, carve them with prompts.source.splits, or give a {split} file"
                                     + (", or set calibrate.enabled: false." if split == "probe" else "."))
    _check_warmup(recipe, prompts, source)
    train = prompts.filter(pl.col("split") == "train")
    schedule = recipe.pool.difficulty_schedule
    if schedule:
        have = sorted(train["difficulty"].drop_nulls().unique().to_list())
        asked = sorted({d for entry in schedule for d in entry} - set(have))
        if asked:
            raise InputDataError(f"asks for difficulty {asked}, but the train split has only {have or 'none'}.",
                                 file=source, field="pool.difficulty_schedule",
                                 fix="use difficulties the prompts have, or set pool.difficulty_schedule: null.")
    rounds = schedule or [None]
    for i, allowed in enumerate(rounds, 1):
        n = train.height if allowed is None else train.filter(pl.col("difficulty").is_in(allowed)).height
        most = _max_selected(recipe, n)
        if most < recipe.check.min_selected:
            raise _budget_error(recipe, most, f"round {i}: {min(n, recipe.pool.prompts_per_iteration or n)} "
                                              "pool prompts")
    _check_lengths(recipe, prompts, source)
