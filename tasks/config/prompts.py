"""Where prompts come from: the built-in arithmetic generator, local files, Hub datasets, MBPP."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tasks.config.base import _Model
from tasks.config.ranges import Count, Share

SPLITS = ("seed", "train", "probe", "test")  # tasks.data.schema.SPLITS, without importing Polars here


class ArithSource(_Model):
    """Built-in generator of arithmetic word problems (the embedded default task)."""

    type: Literal["arith"] = "arith"
    seed_size: int = Field(1000, ge=1, description="labelled warm-up examples")
    seed_mix: list[Share] = Field(
        [0.45, 0.40, 0.10, 0.05],
        description="share of seed examples with 1, 2, 3, 4 steps; the few 4-step ones matter")
    train_size_per_steps: int = Field(
        1500, ge=1, description="unlabelled pool prompts generated for each step count")
    probe_size: int = Field(120, ge=1, description="probe prompts for calibration")
    test_size: int = Field(300, ge=1, description="held-out test prompts (never trained on)")
    max_steps: int = Field(4, ge=1, le=6, description="hardest problem (number of operations)")
    max_start: int = Field(9, ge=2, le=10_000, description="largest starting quantity")
    max_operand: int = Field(9, ge=1, le=10_000, description="largest number added or taken away")

    @field_validator("seed_mix", mode="before")
    @classmethod
    def _mix_of_shares(cls, v: object) -> object:
        # one message for a mix out of range, before each share's own check names an item
        if isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            cls._mix_sums_to_one(v)
        return v

    @field_validator("seed_mix")
    @classmethod
    def _mix_sums_to_one(cls, v: list[float]) -> list[float]:
        if not v or any(not math.isfinite(x) or x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("must be non-negative shares that sum to 1")
        return v


AnswerFormat = Literal["plain", "gsm8k", "boxed"]
ANSWER_FORMAT_DOC = ("how the answer column holds the gold: plain (as is); gsm8k (the text after '####'; the "
                     "seed target becomes the reasoning ending in \\boxed{gold}); boxed (MATH: the last \\boxed{...})")
TARGET_DOC = "labelled solution the seed split is fine-tuned on (may be the answer column, e.g. GSM8K's 'answer')"


CARVE_DOC = (
    "carve splits out of rows that carry none, by a hash of each prompt's normalised text and run.seed: "
    "{test: 0.2, probe: 64, seed: 0.1}; the rest is train. A share (0 < x < 1) keeps every existing prompt "
    "in its split when rows are added. A count (a whole number; probe and seed only) is exact for the "
    "file at hand, but added rows can push a few of its prompts on to the later splits (seed, then train); "
    "none ever moves from train into a carved split. Seed is carved from rows with a target only. With "
    "one file per split, the carve cuts the train file")


class FileSource(_Model):
    """Prompts from local Parquet/JSONL files with a column mapping. Splits come from a split column,
    from a carve (`splits`), or from one file per split (`path: {train: a.jsonl, test: b.jsonl}`)."""

    type: Literal["file"] = "file"
    path: str | dict[str, str] = Field(
        description="a Parquet (.parquet) or JSON-lines (.jsonl) file, or one per split: {train: a.jsonl, "
                    "test: b.jsonl, ...} (train required; test a file or carved). A relative path is looked "
                    "up from the working directory, then from the code repository (data/examples/...)")
    text_column: str = "text"
    answer_column: str | None = "answer"
    split_column: str = Field("split", description="values: seed, train, probe, test; read only from a single "
                                                   "file without `splits`")
    splits: dict[str, Annotated[Share, Field(lt=1)] | Count] | None = Field(None, description=CARVE_DOC)
    difficulty_column: str | None = None
    extra_columns: list[str] = Field(
        default_factory=list, description="other columns the file may carry (ignored); any column not mapped "
                                          "or listed here is an error, so a renamed column is never silently dropped")
    target_column: str | None = Field(None, description=TARGET_DOC)
    answer_format: AnswerFormat = Field("plain", description=ANSWER_FORMAT_DOC)

    @field_validator("path", mode="before")
    @classmethod
    def _split_files(cls, v: object) -> object:
        if not isinstance(v, str | dict) or (isinstance(v, dict) and not all(isinstance(f, str) for f in v.values())):
            raise ValueError("give a file path, or one per split such as {train: a.jsonl, test: b.jsonl}")
        if isinstance(v, dict):
            unknown = sorted(set(v) - set(SPLITS))
            if unknown:
                raise ValueError(f"unknown split(s) {unknown}; one file per split uses keys {list(SPLITS)}")
            if "train" not in v:
                raise ValueError("one file per split needs a train file (the unlabelled pool)")
        return v

    @field_validator("splits", mode="before")
    @classmethod
    def _shares_or_counts(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        for split, x in v.items():
            if split not in ("seed", "probe", "test"):
                raise ValueError(f"cannot carve {split!r}: carve seed, probe and test (the rest is train)")
            if (isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < 0
                    or (isinstance(x, float) and x >= 1)):
                raise ValueError(f"{split}: {x!r} is neither a share (0 < x < 1, e.g. 0.2) nor a count "
                                 "(a whole number, e.g. 64)")
        if isinstance(v.get("test"), int) and v["test"] > 0:
            raise ValueError("test must be a share such as 0.2: a count would move held-out prompts into "
                             "training when rows are added")
        if sum(x for x in v.values() if isinstance(x, float)) >= 1:
            raise ValueError("the shares add up to 1 or more; leave some rows for train")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FileSource:
        if self.answer_format != "plain" and not self.answer_column:
            raise ValueError(f"answer_format '{self.answer_format}' needs answer_column")
        many = isinstance(self.path, dict)
        carved = set(k for k, x in (self.splits or {}).items() if x)
        if many and carved & set(self.path):
            raise ValueError(f"split(s) {sorted(carved & set(self.path))} have a file and a carve; keep one")
        has_test = "test" in carved or (many and "test" in self.path)
        if (many or self.splits is not None) and not has_test:
            raise ValueError("no test split: give a test file or carve one, e.g. splits: {test: 0.2}")
        return self

    def files(self) -> dict[str | None, str]:
        """The files to read, each with the split all its rows belong to (None: from a column or carve)."""
        if isinstance(self.path, dict):
            return {s: self.path[s] for s in SPLITS if s in self.path}
        return {None: self.path}

    def describe(self) -> str:
        """The path(s) as a user wrote them, for messages."""
        return self.path if isinstance(self.path, str) else ", ".join(self.files().values())


class HubSource(_Model):
    """Prompts from a Hugging Face dataset: a Hub id (needs network), or a local folder or data file
    that `datasets.load_dataset` reads. Columns not mapped here are ignored."""

    type: Literal["hub"] = "hub"
    dataset: str = Field(description="Hub id such as 'openai/gsm8k', or a local folder/file of Parquet or JSONL")
    config: str | None = Field(None, description="dataset configuration (subset), e.g. 'main' for openai/gsm8k")
    revision: str | None = Field(None, description="Hub branch, tag or commit; pin it for reproducible runs")
    splits: dict[Literal["seed", "train", "probe", "test"], str] = Field(
        description="our split -> the dataset's split expression, e.g. {seed: 'train[:1000]', test: 'test'}; "
                    "train and test are required")
    text_column: str = Field("question", description="the prompt text")
    answer_column: str = Field("answer", description="the gold answer, read as answer_format says")
    target_column: str | None = Field(None, description=TARGET_DOC)
    difficulty_column: str | None = Field(
        None, description="integer difficulty, or text holding one (MATH's 'Level 3' gives 3)")
    answer_format: AnswerFormat = Field("plain", description=ANSWER_FORMAT_DOC)
    drop_test_overlap: bool = Field(
        False, description="drop seed/train/probe rows whose prompt is also a test prompt instead of refusing them")

    @field_validator("splits")
    @classmethod
    def _train_and_test(cls, v: dict[str, str]) -> dict[str, str]:
        missing = [s for s in ("train", "test") if s not in v]
        if missing:
            raise ValueError(f"needs entries for {missing}")
        return v


class MBPPSource(_Model):
    """MBPP-format code tasks (task_id, text, code, test_list, test_setup_code) from a local file;
    loaded by tasks/data/mbpp.py, verified by running their tests (verifier type unit_tests)."""

    type: Literal["mbpp"] = "mbpp"
    path: str = Field(description="Parquet (.parquet) or JSON-lines (.jsonl) file of MBPP rows")
    seed_size: int = Field(100, ge=0, description="tasks of MBPP's prompt and train ranges (task_id 1-10 and "
                                                  "601-974, lowest id first) labelled with their reference code "
                                                  "for warm-up; the rest of those form the unlabelled pool")
    split_column: str | None = Field(None, description="a column of seed/train/probe/test values; default: by "
                                                       "task_id (test 11-510, validation 511-600 as probe)")


class PromptsConfig(_Model):
    source: Annotated[ArithSource | FileSource | HubSource | MBPPSource,
                      Field(discriminator="type")] = ArithSource()
