"""Where prompts come from: the built-in arithmetic generator, local files, Hub datasets, MBPP."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tasks.config_base import _Model


class ArithSource(_Model):
    """Built-in generator of arithmetic word problems (the embedded default task)."""

    type: Literal["arith"] = "arith"
    seed_size: int = Field(1000, ge=1, description="labelled warm-up examples")
    seed_mix: list[float] = Field(
        [0.45, 0.40, 0.10, 0.05],
        description="share of seed examples with 1, 2, 3, 4 steps; the few 4-step ones matter")
    train_size_per_steps: int = Field(
        1500, ge=1, description="unlabelled pool prompts generated for each step count")
    probe_size: int = Field(120, ge=1, description="probe prompts for calibration")
    test_size: int = Field(300, ge=1, description="held-out test prompts (never trained on)")
    max_steps: int = Field(4, ge=1, le=6, description="hardest problem (number of operations)")
    max_start: int = Field(9, ge=2, le=10_000, description="largest starting quantity")
    max_operand: int = Field(9, ge=1, le=10_000, description="largest number added or taken away")

    @field_validator("seed_mix")
    @classmethod
    def _mix_sums_to_one(cls, v: list[float]) -> list[float]:
        if not v or any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("must be non-negative shares that sum to 1")
        return v


AnswerFormat = Literal["plain", "gsm8k", "boxed"]
ANSWER_FORMAT_DOC = ("how the answer column holds the gold: plain (as is); gsm8k (the text after '####'; the "
                     "seed target becomes the reasoning ending in \\boxed{gold}); boxed (MATH: the last \\boxed{...})")
TARGET_DOC = "labelled solution the seed split is fine-tuned on (may be the answer column, e.g. GSM8K's 'answer')"


class FileSource(_Model):
    """Prompts from a local Parquet/JSONL file with a column mapping."""

    type: Literal["file"] = "file"
    path: str = Field(description="Parquet (.parquet) or JSON-lines (.jsonl) file")
    text_column: str = "text"
    answer_column: str | None = "answer"
    split_column: str = Field("split", description="values: seed, train, probe, test")
    difficulty_column: str | None = None
    extra_columns: list[str] = Field(
        default_factory=list, description="other columns the file may carry (ignored); any column not mapped "
                                          "or listed here is an error, so a renamed column is never silently dropped")
    target_column: str | None = Field(None, description=TARGET_DOC)
    answer_format: AnswerFormat = Field("plain", description=ANSWER_FORMAT_DOC)

    @model_validator(mode="after")
    def _format_needs_answers(self) -> FileSource:
        if self.answer_format != "plain" and not self.answer_column:
            raise ValueError(f"answer_format '{self.answer_format}' needs answer_column")
        return self


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
    loaded by tasks/mbpp.py, verified by running their tests (verifier type unit_tests)."""

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
