"""What a training run reports and records, typed: the records the Reporter receives, the summary
(summary.json, and what `train()` returns) and a checkpoint's metadata (checkpoint.json).

The trainer fills them in; the CLI renders them; nothing here trains.
"""

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from nashcli import __version__
from nashcli.config import NashConfig


@dataclass(frozen=True)
class RunStart:
    """Before the first step."""

    run_dir: str
    data: str  # one line, e.g. "shakespeare (1,486,472 train tokens)"
    parameters: int
    device: str
    precision: str  # as resolved: fp32, bf16 or fp16
    world_size: int  # processes
    batch_size: int  # sequences per micro-batch, one process
    grad_accum_steps: int
    seq_len: int
    tokens_per_step: int  # one optimizer step, all processes
    start_step: int  # 0, or the step a resumed run continues from
    max_steps: int
    max_minutes: Optional[float]  # the time budget (train.max_minutes), if any
    elapsed_s: float  # the run's wall time before this session (a resumed run's budget is partly used)
    peak_flops: float  # measured matmul peak of this precision, all processes (for MFU)
    resumed_from: Optional[str] = None  # the checkpoint folder
    init_from: Optional[str] = None  # the weights the run started from
    notes: list[str] = field(default_factory=list)  # one-line remarks, e.g. a model shape taken from the weights
    # SFT only: one example's "prompt" and "completion" text (the completion, with its <|endoftext|>,
    # carries loss) and the counts "examples", "truncated" and "skipped".
    sft_preview: Optional[dict] = None


@dataclass(frozen=True)
class StepRecord:
    """After every optimizer step (tokens_per_s and mfu are smoothed over recent steps)."""

    step: int
    tokens: int  # trained on so far, all processes
    train_loss: float  # mean over the step's target tokens, all micro-batches and processes
    lr: float
    grad_norm: float  # before clipping
    tokens_per_s: float
    mfu: float  # model FLOPs utilisation, 0 to 1
    elapsed_s: float  # wall time of the run, earlier sessions included

    def metrics(self) -> dict:
        """The record as metrics.jsonl and wandb log it (the step is logged beside it)."""
        return {key: value for key, value in asdict(self).items() if key != "step"}


@dataclass(frozen=True)
class EvalRecord:
    """After an evaluation on the validation batches."""

    step: int
    val_loss: float  # mean nats per target token
    val_bpb: float  # bits per UTF-8 byte of the targets' text: val_loss * val_tokens / (ln 2 * val_bytes)
    val_perplexity: float
    val_accuracy: float
    val_tokens: int
    val_bytes: int
    is_best: bool  # the lowest val_loss of the run so far
    # train.eval_tasks' metrics under task-prefixed names, e.g. {"hellaswag_acc": .., "hellaswag_acc_norm": ..}
    task_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    """When training stops, finished or interrupted; summary.json holds it when finished."""

    run_dir: str
    steps: int
    tokens: int
    wall_time_s: float
    tokens_per_s: float  # mean over this session's steps
    mfu: float
    final_train_loss: float
    best_val_loss: Optional[float]
    final_val_loss: Optional[float]
    parameters: int
    precision: str
    device: str
    world_size: int
    peak_memory_mb: float
    interrupted: bool  # stopped by a signal before max_steps or the time budget (it saved `last`)
    stop_signal: Optional[int]  # the signal this process received, if any
    resume_command: str

    def summary_json(self) -> dict:
        """What summary.json holds: the totals, not how this session ended."""
        ending = ("interrupted", "stop_signal", "resume_command")
        return {key: value for key, value in asdict(self).items() if key not in ending}


def checkpoint_meta(config: NashConfig, counters: dict, world_size: int, precision: str) -> dict:
    """checkpoint.json's description of the run at the checkpoint (the file layer adds its checksums)."""
    return {
        **{key: counters[key] for key in ("step", "tokens", "last_train_loss", "last_val_loss")},
        "best_val_loss": finite_or_none(counters["best_val_loss"]),
        "world_size": world_size,
        "precision": precision,
        "nash_version": __version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config.model_dump(mode="json"),
    }


def resume_command(run_dir: str, world_size: int) -> str:
    """The command that continues the run where its `last` checkpoint left it."""
    launcher = f"torchrun --nproc_per_node={world_size} -m nashcli" if world_size > 1 else "nash"
    return f"{launcher} train --resume {run_dir}"


def finite_or_none(value: float) -> Optional[float]:
    """JSON has no infinity: a best val loss before any evaluation is None."""
    return value if math.isfinite(value) else None
