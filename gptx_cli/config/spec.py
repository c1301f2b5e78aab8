"""The normalised, typed run description that everything below the config package consumes.

Nothing outside `gptx_cli.config` reads raw YAML dicts: model, data, train and eval take these
dataclasses. This module is torch-free (validate-config must not import torch).

Field names follow ModelZoo's YAML keys so that a reader can map one to the other at a glance.
Defaults are ModelZoo's (GPT-J model config, trainer defaults) unless noted "gptx extension"; the
`default`s in schemas/model.schema.json are the same values (tests/config checks it), so a YAML file and
`ModelConfig(...)` that leave a key out get the same model.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

ModelName = Literal["gptj", "gpt-neox"]
# Field metadata: the field shapes training only (dropout, initialisation, muP's filter base, which only
# scales learning rates); a trained model computes the same function whatever its value.
TRAINING_ONLY = {"training_only": True}


@dataclass
class ModelConfig:
    """The `model` section: one decoder for GPT-J and GPT-NeoX; variants are flags."""

    name: str = "gptj"
    vocab_size: int = 50257
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_heads: int = 12
    filter_size: int = 3072
    max_position_embeddings: int = 1024
    position_embedding_type: str = "rotary"
    rotary_dim: int | None = None  # None -> int(head_dim * 0.25)
    rope_theta: float = 10000.0
    # gptx extension: GPT-J's interleaved pairs (rotate-every-two) instead of the half split.
    # ModelZoo (and gptx checkpoints by default) use the half split; the HF GPT-J adapter permutes.
    rotary_interleaved: bool = False
    # Residual structure: GPT-J = parallel + one shared LayerNorm; GPT-NeoX = parallel + two LayerNorms.
    use_untied_layer_norm: bool = False
    use_parallel_residual: bool = True  # gptx extension (HF GPT-NeoX `use_parallel_residual`)
    # Biases.
    use_projection_bias_in_attention: bool = True  # q/k/v
    use_ffn_bias_in_attention: bool = True  # attention output projection
    use_ffn_bias: bool = False
    use_bias_in_output: bool = False  # LM head
    share_embedding_weights: bool = True
    nonlinearity: str = "gelu"
    layer_norm_epsilon: float = 1e-5
    attention_type: str = "scaled_dot_product"  # or "dot_product" (no 1/sqrt(d))
    attention_softmax_fp32: bool = True
    embedding_dropout_rate: float = field(default=0.1, metadata=TRAINING_ONLY)
    attention_dropout_rate: float = field(default=0.1, metadata=TRAINING_ONLY)
    residual_dropout_rate: float = field(default=0.1, metadata=TRAINING_ONLY)
    # Initialisers: dicts as in the YAML ({name: truncated_normal, mean, std, a, b}, ...), None = default.
    initializer_range: float = field(default=0.02, metadata=TRAINING_ONLY)
    embedding_initializer: dict[str, Any] | None = field(default=None, metadata=TRAINING_ONLY)
    initializer: dict[str, Any] | None = field(default=None, metadata=TRAINING_ONLY)
    output_layer_initializer: dict[str, Any] | None = field(default=None, metadata=TRAINING_ONLY)
    ffn_initializer: dict[str, Any] | None = field(default=None, metadata=TRAINING_ONLY)
    ffn_output_initializer: dict[str, Any] | None = field(default=None, metadata=TRAINING_ONLY)
    # muP (ModelZoo semantics).
    mup_base_hidden_size: int | None = None
    mup_base_filter_size: int | None = field(default=None, metadata=TRAINING_ONLY)
    # gptx extension: muP scales the initializers the config gives too (ModelZoo's GPT-2); false: GPT-J's rule
    mup_scale_all_initializers: bool = field(default=False, metadata=TRAINING_ONLY)
    embeddings_scale: float = 1.0
    output_logits_alpha: float | None = None
    scale_qk_dot_by_d: bool = False
    scale_output_logits_by_d: bool = True
    attention_logits_alpha: float = 1.0
    # Loss.
    loss_scaling: str = "num_tokens"  # or "batch_size"
    loss_weight: float = 1.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def resolved_rotary_dim(self) -> int:
        return self.rotary_dim if self.rotary_dim is not None else int(self.head_dim * 0.25)

    @property
    def uses_mup(self) -> bool:
        return self.mup_base_hidden_size is not None

    def check(self) -> list[tuple[str, str]]:
        """(key, message) for every rule the model's shape needs: validate-config reports each at its
        key, and the model refuses to be built with the first (one set of rules for both)."""
        out: list[tuple[str, str]] = []
        if self.name not in typing.get_args(ModelName):
            supported = ", ".join(typing.get_args(ModelName))
            out.append(("name", f"model '{self.name}' is not supported by gptx (supported: {supported})"))
        hidden, heads = self.hidden_size, self.num_heads
        if heads <= 0 or hidden % heads:
            out.append(("num_heads", f"hidden_size {hidden} is not divisible by num_heads {heads}"))
            return out
        if self.position_embedding_type != "rotary":
            return out
        rotary, head_dim = self.resolved_rotary_dim, hidden // heads
        if self.rotary_dim is None and rotary % 2:
            out.append(
                (
                    "hidden_size",
                    f"the default rotary_dim int(head_dim * 0.25) = {rotary} is odd: set rotary_dim",
                )
            )
        elif rotary % 2:
            out.append(("rotary_dim", f"rotary_dim must be even, got {rotary}"))
        if rotary > head_dim:
            out.append(
                (
                    "rotary_dim",
                    f"rotary_dim {rotary} is larger than the head dimension {head_dim} "
                    f"(hidden_size {hidden} / num_heads {heads})",
                )
            )
        return out

    def differences(self, other: ModelConfig) -> list[str]:
        """The fields whose values differ between the two configs and change what the model computes
        (TRAINING_ONLY fields left out; rotary_dim compared as the model uses it)."""

        def value(cfg: ModelConfig, name: str) -> Any:
            return cfg.resolved_rotary_dim if name == "rotary_dim" else getattr(cfg, name)

        return [
            f.name
            for f in dataclasses.fields(self)
            if not f.metadata.get("training_only") and value(self, f.name) != value(other, f.name)
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_section(self) -> dict[str, Any]:
        """The ModelZoo `model` section: None values (ModelZoo's default) are left out, and so are muP
        multipliers at their neutral defaults in a model that does not use muP."""
        section = {k: v for k, v in self.to_dict().items() if v is not None}
        if not self.uses_mup:
            for key in (
                "embeddings_scale",
                "scale_qk_dot_by_d",
                "scale_output_logits_by_d",
                "attention_logits_alpha",
            ):
                if section.get(key) == getattr(ModelConfig, key):
                    section.pop(key)
        return section

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def trainer_config_for_model(cfg: ModelConfig) -> dict[str, Any]:
    """A trainer-layout config holding only the model (what a converted checkpoint's config.yaml holds)."""
    return {"trainer": {"init": {"model": cfg.to_section()}}}


@dataclass
class DataSpec:
    """One dataloader section (`train_dataloader`, `val_dataloader`, legacy `train_input`/`eval_input`)."""

    data_processor: str = "GptHDF5MapDataProcessor"
    data_dir: list[str] = field(default_factory=list)
    batch_size: int = 1  # the global batch: split over ranks and accumulation steps
    shuffle: bool = False
    shuffle_seed: int = 0
    drop_last: bool = True
    num_workers: int = 0
    prefetch_factor: int | None = None
    persistent_workers: bool = False
    data_subset: str | None = None  # ModelZoo "0.0-0.5" style
    mixture: list[dict[str, Any]] | None = None  # [{data_dir, weight}, ...]
    num_samples: int | None = None
    max_sequence_length: int | None = None
    vocab_size: int | None = None
    use_vsl: bool = False  # samples carry attention_span and position_ids rows (data/vsl.py)
    extra: dict[str, Any] = field(default_factory=dict)  # other processor keys, kept verbatim


@dataclass
class OptimizerSpec:
    name: str = "AdamW"  # canonical spelling: AdamW, Adam, SGD, Lion, ...
    params: dict[str, Any] = field(default_factory=dict)  # e.g. betas, eps, weight_decay, correct_bias


@dataclass
class SchedulerSpec:
    """One scheduler; SequentialLR (and ChainedScheduler) hold children."""

    name: str  # canonical: LinearLR, CosineDecayLR, ConstantLR, SequentialLR, ...
    params: dict[str, Any] = field(default_factory=dict)
    children: list[SchedulerSpec] = field(default_factory=list)


@dataclass
class PrecisionSpec:
    enabled: bool = False  # mixed precision on/off
    fp16_type: str | None = None  # None, "float16", "bfloat16", "cbfloat16" (runs as bfloat16)
    loss_scaling_factor: float | str = 1.0  # a number or "dynamic"
    initial_loss_scale: float = 2.0**15
    steps_per_increase: int = 2000
    min_loss_scale: float = 2.0**-14
    max_loss_scale: float = 2.0**15
    max_gradient_norm: float | None = None
    max_gradient_value: float | None = None

    @property
    def autocast_dtype(self) -> str | None:
        """The torch dtype name to autocast to, or None for full fp32."""
        if not self.enabled or self.fp16_type is None:
            return None
        return "float16" if self.fp16_type == "float16" else "bfloat16"


@dataclass
class LoopSpec:
    max_steps: int | None = None
    num_steps: int | None = None
    eval_frequency: int | float | None = None  # int steps, or a fraction of the run
    eval_steps: int | None = None
    grad_accum_steps: int = 1


@dataclass
class CheckpointSpec:
    steps: int | None = None
    autoload_last_checkpoint: bool = True
    save_initial_checkpoint: bool = False
    checkpoint_name: str = "checkpoint_{step}"
    keep_last_n: int | None = None  # gptx extension (None = keep all)


@dataclass
class LoggingSpec:
    log_steps: int = 1
    log_level: str = "INFO"


@dataclass
class BackendSpec:
    backend_type: str = "CPU"  # CSX / CPU / GPU; CSX runs on whatever torch device is there
    # gptx extensions (trainer.init.backend.*):
    strategy: str = "ddp"  # "ddp" or "fsdp" when several processes run
    activation_checkpointing: bool = False
    compile: bool = False
    micro_batch_size: int | None = None
    cpu_float16: bool = False  # float16 on a CPU as float16 (ModelZoo: as bfloat16)


@dataclass
class RunSpec:
    """Everything a run needs, resolved from one trainer (or a converted legacy config)."""

    model: ModelConfig
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedulers: list[SchedulerSpec] = field(default_factory=list)
    precision: PrecisionSpec = field(default_factory=PrecisionSpec)
    loop: LoopSpec = field(default_factory=LoopSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    logging: LoggingSpec = field(default_factory=LoggingSpec)
    backend: BackendSpec = field(default_factory=BackendSpec)
    seed: int | None = None
    model_dir: str = "./model_dir"
    train_data: DataSpec | None = None
    val_data: DataSpec | None = None
    ckpt_path: str | None = None  # trainer.fit.ckpt_path
    source: str | None = None  # the YAML file it came from
    raw: dict[str, Any] = field(default_factory=dict)  # the resolved trainer-layout dict, for saving
    notes: list[str] = field(default_factory=list)  # e.g. "cbfloat16 runs as bfloat16 off Cerebras"
    # trainer.init.callbacks / loggers: [(name, params)], e.g. ("ComputeNorm", {}) (train/callbacks.py)
    callbacks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    loggers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # validate-config's warnings for this trainer (`file:line:col: warning: key: ...`), shown when a run starts
    warnings: list[str] = field(default_factory=list)
