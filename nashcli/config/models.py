"""Validated configuration: the only input of the engine.

Field names are the public interface: presets, `--set model.d_model=512` and the docs use them.
Defaults follow GPT-2 124M. Validators check and never silently change a value.
"""

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator, model_validator

from nashcli.config.optimizers import AdamWSettings, OptimizerSettings
from nashcli.config.strict import StrictModel
from nashcli.tasks.registry import check_task_name

Precision = Literal["auto", "fp32", "bf16", "fp16"]
WandbMode = Literal["disabled", "offline", "online"]


class ModelConfig(StrictModel):
    """Shape of the GPT."""

    n_layers: Annotated[int, Field(ge=1, le=256, description="Number of transformer blocks.")] = 12
    n_heads: Annotated[int, Field(ge=1, le=256, description="Attention heads per block.")] = 12
    d_model: Annotated[int, Field(ge=8, le=32768, description="Width of the residual stream.")] = 768
    d_ff: Annotated[int, Field(ge=8, le=131072, description="Hidden width of the MLP (4 x d_model in GPT-2).")] = 3072
    vocab_size: Annotated[
        int, Field(ge=2, le=65535, description="Real vocabulary size (GPT-2: 50257). Token shards are uint16.")
    ] = 50257
    vocab_pad_multiple: Annotated[
        int,
        Field(
            ge=1,
            le=1024,
            description="Embedding/LM-head rows are padded to a multiple of this for faster matmuls; "
            "loss, sampling and exported weights only ever see the real vocab_size entries.",
        ),
    ] = 64
    max_seq_len: Annotated[int, Field(ge=1, le=131072, description="Context length in tokens.")] = 1024
    dropout: Annotated[float, Field(ge=0.0, lt=1.0, description="Dropout on embeddings, attention and MLP.")] = 0.0
    # Architecture options; each default is GPT-2's, so GPT-2 weights import and export unchanged.
    positions: Annotated[
        Literal["learned", "rope"],
        Field(description="learned: a position embedding (GPT-2); rope: rotary positions on queries and keys."),
    ] = "learned"
    norm: Annotated[
        Literal["layernorm", "rmsnorm"], Field(description="Normalisation layers: layernorm (GPT-2) or rmsnorm.")
    ] = "layernorm"
    activation: Annotated[
        Literal["gelu", "relu2"],
        Field(description="MLP activation: gelu (GPT-2's tanh approximation) or relu2 (squared ReLU)."),
    ] = "gelu"
    qk_norm: Annotated[
        bool, Field(description="Normalise queries and keys per head (with model.norm) before attention.")
    ] = False
    tie_embeddings: Annotated[
        bool, Field(description="The LM head is the token embedding (GPT-2); false gives the head its own weights.")
    ] = True
    bias: Annotated[bool, Field(description="Biases in the linear layers and LayerNorms (GPT-2: true).")] = True
    zero_init_output: Annotated[
        bool,
        Field(description="Start the output projections of attention and MLP at zero (GPT-2: small random)."),
    ] = False

    @model_validator(mode="after")
    def _heads_fit_the_width(self) -> "ModelConfig":
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(
                f"model.positions=rope rotates pairs of dimensions: the head width model.d_model / model.n_heads "
                f"({self.head_dim}) must be even"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        multiple = self.vocab_pad_multiple
        return (self.vocab_size + multiple - 1) // multiple * multiple


class TrainConfig(StrictModel):
    """Optimisation, schedule, precision and bookkeeping of a training run."""

    batch_size: Annotated[int, Field(ge=1, le=65536, description="Sequences per micro-batch on each process.")] = 8
    lr: Annotated[float, Field(gt=0.0, le=10.0, description="Peak learning rate after warmup.")] = 6e-4
    min_lr: Annotated[float, Field(ge=0.0, le=10.0, description="Learning rate at the end of the decay.")] = 6e-5
    schedule: Annotated[
        Literal["cosine", "wsd"],
        Field(description="After warmup: cosine decay to min_lr, or wsd (constant, then a linear decay to min_lr)."),
    ] = "cosine"
    decay_fraction: Annotated[
        float, Field(gt=0.0, le=1.0, description="wsd: the last fraction of training (steps or budget) that decays.")
    ] = 0.2
    weight_decay: Annotated[
        float, Field(ge=0.0, le=10.0, description="AdamW decay on matrices (not on biases, LayerNorms, embeddings).")
    ] = 0.1
    betas: Annotated[
        tuple[
            Annotated[float, Field(ge=0.0, lt=1.0)],
            Annotated[float, Field(ge=0.0, lt=1.0)],
        ],
        Field(description="AdamW (beta1, beta2)."),
    ] = (0.9, 0.95)
    optimizer: Annotated[
        OptimizerSettings,
        Field(description="name=adamw (AdamW everywhere) or name=muon (Muon for block matrices, AdamW for the rest)."),
    ] = AdamWSettings()
    max_steps: Annotated[
        int, Field(ge=1, description="Optimizer steps in the whole run (with max_minutes: a cap on them).")
    ] = 19073
    max_minutes: Annotated[
        Optional[float],
        Field(
            gt=0.0,
            allow_inf_nan=False,
            description="A time budget: the run ends when its wall time reaches it, and the decay follows it.",
        ),
    ] = None
    warmup_steps: Annotated[int, Field(ge=0, description="Linear warmup steps before the decay.")] = 700
    grad_clip: Annotated[
        float, Field(ge=0.0, description="Clip the global gradient norm to this value; 0 disables clipping.")
    ] = 1.0
    grad_accum_steps: Annotated[
        int, Field(ge=1, le=65536, description="Micro-batches accumulated into one optimizer step.")
    ] = 1
    eval_interval: Annotated[
        int, Field(ge=0, description="Evaluate every this many steps (and at the end); 0 evaluates only at the end.")
    ] = 250
    eval_batches: Annotated[int, Field(ge=1, description="Validation batches per evaluation.")] = 20
    eval_tasks: Annotated[
        list[str], Field(description="Tasks scored at each evaluation too, e.g. [hellaswag] (see `nash eval --task`).")
    ] = []
    eval_task_limit: Annotated[
        Optional[int], Field(ge=1, description="Score only the first this many examples of each eval task.")
    ] = None
    checkpoint_interval: Annotated[
        int, Field(ge=0, description="Save the `last` checkpoint every this many steps (and at the end); 0: only at the end.")
    ] = 500
    keep_checkpoints: Annotated[
        int, Field(ge=0, description="Also keep this many numbered step checkpoints; 0 keeps only `last` and `best`.")
    ] = 0
    precision: Annotated[
        Precision,
        Field(description="auto: bf16 where the device supports it, else fp32; fp16 only when asked (uses a grad scaler)."),
    ] = "auto"
    compile: Annotated[bool, Field(description="Compile the model with torch.compile.")] = False
    strategy: Annotated[
        Literal["ddp", "fsdp"],
        Field(description="Several processes: ddp (a full copy on each) or fsdp (weights, grads and optimizer state sharded)."),
    ] = "ddp"
    seed: Annotated[int, Field(ge=0, description="Seed for initialisation, data order and dropout.")] = 1337
    device: Annotated[
        str,
        Field(
            pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
            description="auto, cpu, mps, cuda or cuda:N (under torchrun each process takes cuda:LOCAL_RANK).",
        ),
    ] = "auto"

    @model_validator(mode="after")
    def _schedule_is_consistent(self) -> "TrainConfig":
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must not exceed train.lr ({self.lr})")
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"train.warmup_steps ({self.warmup_steps}) must not exceed train.max_steps ({self.max_steps})"
            )
        return self

    @field_validator("eval_tasks")
    @classmethod
    def _eval_tasks_are_known(cls, specs: list[str]) -> list[str]:
        prefixes: dict[str, str] = {}
        for spec in specs:
            prefix = check_task_name(spec)  # ValueError naming the known tasks; reads no file
            if prefix in prefixes:
                raise ValueError(
                    f"{prefixes[prefix]!r} and {spec!r} would both log {prefix}_* metrics: list each task once "
                    "(rename one of the files)"
                )
            prefixes[prefix] = spec
        return specs

    @model_validator(mode="after")
    def _optimizer_fits_the_strategy(self) -> "TrainConfig":
        if self.optimizer.name == "muon" and self.strategy == "fsdp":
            raise ValueError(
                "train.optimizer.name=muon needs whole matrices and train.strategy=fsdp shards them: "
                "use train.strategy=ddp with Muon, or train.optimizer.name=adamw with FSDP"
            )
        return self


class DataConfig(StrictModel):
    """Where the training data comes from: a prepared token dataset, or an SFT file."""

    dataset: Annotated[
        Optional[str],
        Field(description="A prepared dataset: a name under data/ (from `nash prepare`) or a folder path."),
    ] = None
    data_dir: Annotated[Path, Field(description="Folder where prepared datasets are looked up by name.")] = Path("data")
    sft_file: Annotated[
        Optional[Path],
        Field(description="SFT examples (.jsonl of prompt/completion or chat messages); trains on completions only."),
    ] = None
    sft_val_file: Annotated[
        Optional[Path], Field(description="SFT validation examples; without it a fraction of sft_file is held out.")
    ] = None
    sft_val_fraction: Annotated[
        float, Field(ge=0.0, lt=1.0, description="Fraction of sft_file held out for validation when no sft_val_file.")
    ] = 0.05

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if self.dataset is not None and self.sft_file is not None:
            raise ValueError("set either data.dataset (pretraining) or data.sft_file (fine-tuning), not both")
        if self.sft_val_file is not None and self.sft_file is None:
            raise ValueError("data.sft_val_file needs data.sft_file")
        return self


class MetricsConfig(StrictModel):
    """Where metrics go: always the run's metrics.jsonl, optionally wandb."""

    wandb: Annotated[
        WandbMode, Field(description="disabled, offline (no account needed) or online (needs `wandb login`).")
    ] = "disabled"
    wandb_project: Annotated[str, Field(min_length=1, description="wandb project name.")] = "nash"
    log_interval: Annotated[int, Field(ge=1, description="Log training metrics every this many steps.")] = 10


class NashConfig(StrictModel):
    """A whole run: what `nash train` validates and writes to runs/<name>/config.yaml."""

    name: Annotated[
        Optional[str],
        Field(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
            description="Run name (folder under runs_dir); default: preset name + timestamp.",
        ),
    ] = None
    runs_dir: Annotated[Path, Field(description="Folder that holds one sub-folder per run.")] = Path("runs")
    init_from: Annotated[
        Optional[str],
        Field(description="Start from these weights (run folder, checkpoint, or hf:PATH_OR_ID) with a fresh optimizer."),
    ] = None
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()
    metrics: MetricsConfig = MetricsConfig()

    @property
    def is_sft(self) -> bool:
        return self.data.sft_file is not None

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step on one process (multiply by the world size for the global batch)."""
        return self.train.batch_size * self.train.grad_accum_steps * self.model.max_seq_len
