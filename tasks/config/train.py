"""Fine-tuning settings: SFT or DPO, LoRA/QLoRA adapters and multi-GPU launchers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config.base import _Model
from tasks.config.ranges import LearningRate, Share, StepCount, Weight


class LoraConfig(_Model):
    """LoRA adapters (PEFT) instead of full fine-tuning; with `quantize`, QLoRA on a quantized frozen base."""

    r: int = Field(16, ge=1, description="adapter rank")
    alpha: int = Field(32, ge=1, description="scaling numerator: updates are scaled by alpha / r")
    dropout: Share = Field(0.05, lt=1, description="dropout on the adapter input")
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


class DPOSettings(_Model):
    """Direct preference optimisation with TRL's DPOTrainer (train.objective `dpo`), against the parent."""

    beta: Weight = Field(0.1, gt=0, description="how far the policy may move from the reference model; higher "
                                               "keeps it closer")
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero",
                       "apo_down", "sigmoid_norm"] = Field(
        "sigmoid", description="TRL's DPO loss: sigmoid is the DPO paper's; ipo, hinge and the others are variants")
    label_smoothing: Share = Field(0.0, lt=0.5, description="probability a pair is flipped (robust, cDPO)")
    sft_weight: Weight = Field(
        0.0, description="weight of a negative log-likelihood term on the chosen answer, added to the DPO "
                               "loss (Iterative RPO; 1.0 in its paper). Pure DPO lowers the chosen answer's "
                               "likelihood too and can unlearn the format; this keeps it. 0: pure DPO")


class TrainConfig(_Model):
    """Fine-tuning with TRL: SFTTrainer on chat examples, or DPOTrainer on preference pairs
    (full, LoRA or QLoRA either way)."""

    objective: Literal["sft", "dpo"] = Field(
        "sft", description="sft: supervised on the selected examples; dpo: preference pairs (select.mode pairs), "
                           "the parent model as the reference")
    dpo: DPOSettings = Field(DPOSettings(), description="DPO settings (objective dpo)")

    mode: Literal["continue", "restart"] = Field(
        "continue", description="continue from the parent (B-STaR) or restart from iteration 0 (ReST-EM)")
    learning_rate: LearningRate = Field(3e-4, description="peak learning rate of the fine-tune")
    max_steps: StepCount = Field(120, description="optimizer steps per fine-tune")
    batch_size: int = Field(64, ge=1, description="examples per device per optimizer step")
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: Share = Field(0.05, lt=1, description="share of the steps the learning rate ramps up over")
    weight_decay: Weight = Field(0.0, description="AdamW weight decay")
    include_seed: bool = Field(True, description="mix the labelled seed set into each iteration (objective sft)")
    max_length: int = Field(256, ge=16, le=1_048_576, description="longest training example, in tokens")
    sampling: Literal["random", "group_by_length"] = Field(
        "random", description="group_by_length batches examples of similar length: less padding, faster steps")
    lora: LoraConfig | None = Field(None, description="None: full fine-tuning; set to train LoRA/QLoRA adapters")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that supports it, else fp32 (CPU); bf16/fp16 are mixed precision")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save GPU memory")
    checkpoint_every: StepCount | None = Field(
        None, description="save a resumable checkpoint every N steps; a re-run after a crash resumes from it")
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
    objective: Literal["sft"] = Field("sft", description="the warm-up is always SFT on the labelled seed set")
    mode: Literal["continue", "restart"] = "continue"
    # the same types as train's, so the same limits: the warm-up once redeclared these without them
    learning_rate: LearningRate = Field(2e-3, description="peak learning rate of the warm-up")
    max_steps: StepCount = Field(313, description="optimizer steps of the warm-up")
    include_seed: bool = True
