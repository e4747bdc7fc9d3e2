"""tasks/stages/judge.py: the policy scores its own samples 1-5 from a recipe prompt; the score is parsed
strictly, never evaluated; the replies are a table of their own, deterministic on CPU."""

from __future__ import annotations

import polars as pl
import pytest

from tasks.config.loading import recipe_from_dict
from tasks.config.recipe import GenerateConfig, JudgeConfig, RewardConfig
from tasks.data.schema import JUDGED, conform
from tasks.errors import ConfigError
from tasks.stages.judge import add_judge_rewards, judge, judge_requests, judge_table, parse_scores


def scores(replies: list[str], pattern: str = JudgeConfig().pattern) -> list[int | None]:
    return pl.select(parse_scores(pl.Series(replies, dtype=pl.String), pattern)).to_series().to_list()


def test_scores_are_parsed_strictly():
    assert scores(["4", " 5 great", "2\nbecause", "  1", "3."[:1]]) == [4, 5, 2, 1, 3]
    assert scores(["6", "0", "four", "4.5", "3/5", "", "Score: 4", "45"]) == [None] * 8
    assert scores(["Score: 4", "score 2"], r"(?i)score:?\s*([1-5])") == [4, 2]


def test_python_looking_replies_are_never_run(tmp_path):
    marker = tmp_path / "ran"
    reply = f"__import__('pathlib').Path({str(marker)!r}).write_text('x') or 5"
    assert scores([reply, "eval('5')"]) == [None, None]
    assert not marker.exists()


def test_judge_prompt_and_pattern_are_checked_when_the_recipe_loads():
    with pytest.raises(ConfigError, match="reward.judge.prompt.*lacks \\{answer\\}"):
        recipe_from_dict({"reward": {"source": "judge", "judge": {"prompt": "Rate {question}"}}})
    with pytest.raises(ConfigError, match="reward.judge.pattern.*exactly one capture group"):
        recipe_from_dict({"reward": {"judge": {"pattern": r"(\d)(\d)"}}})
    with pytest.raises(ConfigError, match="reward.judge.pattern.*not a valid regular expression"):
        recipe_from_dict({"reward": {"judge": {"pattern": r"(?=5)(5)"}}})  # Rust regex has no lookahead


def test_requests_fill_the_template_by_plain_replacement():
    samples = pl.DataFrame({"prompt_id": ["p", "p"], "sample_idx": [0, 1], "text": [" Answer: 4 ", "{question} {x}"]},
                           schema_overrides={"sample_idx": pl.Int32})
    prompts = pl.DataFrame({"prompt_id": ["p"], "text": ["What is 2+2?"]})
    req = judge_requests(samples, prompts, JudgeConfig(prompt="Q: {question}\nA: {answer}\nScore:"))
    assert req["prompt_id"].to_list() == ["p#0", "p#1"]
    assert req["text"].to_list() == ["Q: What is 2+2?\nA: Answer: 4\nScore:", "Q: What is 2+2?\nA: {question} {x}\nScore:"]


def test_rewards_map_scores_to_minus_one_to_one_and_unscored_samples_get_none():
    scored = pl.DataFrame({"prompt_id": ["p"] * 3, "sample_idx": [0, 1, 2], "correct": [True, False, True],
                           "reward": [None, None, None], "score": [1.0, 0.0, 1.0]},
                          schema_overrides={"sample_idx": pl.Int32, "reward": pl.Float64})
    judged = pl.DataFrame({"prompt_id": ["p"] * 3, "sample_idx": [0, 1, 2], "judge_score": [5, 1, None]},
                          schema_overrides={"sample_idx": pl.Int32, "judge_score": pl.Int32})
    out = add_judge_rewards(scored, judged, RewardConfig(source="judge", weight=0.5))
    assert out["reward"].to_list() == [1.0, -1.0, None]
    assert out["score"].to_list() == [1.5, -0.5, 1.0]


def test_judge_table_from_the_tiny_policy_is_deterministic(micro_assets, tmp_path):
    recipe, prompts_path, model = micro_assets
    prompts = pl.read_parquet(prompts_path).filter(pl.col("split") == "train").head(3)
    samples = pl.DataFrame({"prompt_id": prompts["prompt_id"].to_list() * 2, "sample_idx": [0, 0, 0, 1, 1, 1],
                            "text": [" 3+4=7. Answer: 7"] * 3 + [" garbage"] * 3},
                           schema_overrides={"sample_idx": pl.Int32})
    gen = GenerateConfig(backend="hf", batch_size=8)
    a = judge_table(model, samples, prompts, gen, JudgeConfig(), seed=11, iteration="0001")
    b = judge_table(model, samples, prompts, gen, JudgeConfig(), seed=11, iteration="0001")
    assert conform(a, JUDGED).equals(conform(b, JUDGED)) and a.height == 6
    assert set(zip(a["prompt_id"], a["sample_idx"])) == set(zip(samples["prompt_id"], samples["sample_idx"]))
    assert (a["n_tokens"] <= JudgeConfig().max_new_tokens).all()
    # whatever the untrained model wrote, a score exists exactly where the reply matches the pattern
    assert a["judge_score"].to_list() == scores(a["text"].to_list())

    samples.write_parquet(tmp_path / "samples.parquet")
    prompts.write_parquet(tmp_path / "prompts.parquet")
    off = judge(model, tmp_path / "samples.parquet", tmp_path / "prompts.parquet", gen, RewardConfig(), seed=11,
                iteration="0001", out_path=tmp_path / "off.parquet")
    assert pl.read_parquet(off).height == 0 and pl.read_parquet(off).schema == JUDGED.schema
    on = judge(model, tmp_path / "samples.parquet", tmp_path / "prompts.parquet", gen,
               RewardConfig(source="judge"), seed=11, iteration="0001", out_path=tmp_path / "on.parquet")
    assert pl.read_parquet(on).equals(conform(a, JUDGED))


@pytest.mark.slow  # about a minute: a micro run of one iteration
def test_a_judged_iteration_versions_the_judge_replies(tmp_path):
    import json

    import yaml

    from tests.conftest import MICRO_RECIPE, flywheel

    recipe = {**MICRO_RECIPE, "run": {**MICRO_RECIPE["run"], "iterations": 1},
              "reward": {"source": "judge", "weight": 0.5, "judge": {"pattern": "([1-5])"}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    ws = tmp_path / "ws"
    flywheel("run", "-w", str(ws), "-c", str(tmp_path / "r.yaml"), "-n", "1")
    it = ws / "data/iterations/0001"
    judged, scored = pl.read_parquet(it / "judged.parquet"), pl.read_parquet(it / "scored.parquet")
    assert judged.schema == JUDGED.schema and judged.height == scored.height
    both = scored.join(judged, on=["prompt_id", "sample_idx"])
    assert both.filter(pl.col("reward").is_not_null() != pl.col("judge_score").is_not_null()).height == 0
    assert both.filter(pl.col("reward") != (pl.col("judge_score") - 3) / 2).height == 0
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["score@0001"]
    assert "data/iterations/0001/judged.parquet" in {o["path"] for o in lock["outs"]}
    assert "models/0000" in {d["path"] for d in lock["deps"]}  # the judge: the model that wrote the samples
    assert json.loads((it / "gate.json").read_text())["passed"]
