"""Models for inference and evaluation: from a nash run or checkpoint, or from hf: GPT-2 weights.

What `nash eval`, `nash generate` and `nash export` stand on.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch

from nashcli.config import NashConfig, override_config
from nashcli.engine.allocator import keep_freed_memory
from nashcli.engine.batches import build_split_batches
from nashcli.engine.distributed import DistributedContext, pick_device
from nashcli.engine.evaluate import evaluate
from nashcli.engine.locate import find_weights
from nashcli.errors import NashError
from nashcli.model.gpt import GPT
from nashcli.tasks.base import Task
from nashcli.tasks.registry import load_task
from nashcli.tasks.scoring import evaluate_task


def load_model(source: str, checkpoint: Optional[str] = None, device: str = "auto") -> tuple[GPT, NashConfig]:
    """(GPT in eval mode on `device`, the config it was trained with).

    `source` is a run folder or name, a checkpoint folder, or hf:PATH_OR_ID. For a run, `checkpoint`
    picks `best` or `last`; None means best if the run has one, else last (as --init-from does).

    Example: model, config = load_model("runs/demo", checkpoint="best")
    """
    weights = find_weights(source, checkpoint)
    model = GPT(weights.config.model)
    weights.load_into(model)
    return model.to(pick_device(device, local_rank=0, world_size=1)).eval(), weights.config


@dataclass
class EvalRequest:
    """What `nash eval` measures; None keeps the run's own setting."""

    source: str
    checkpoint: Optional[str] = None
    dataset: Optional[str] = None  # a prepared dataset name or folder
    split: str = "val"
    max_batches: Optional[int] = None  # default: the run's train.eval_batches
    batch_size: Optional[int] = None
    precision: Optional[str] = None
    device: str = "auto"


@dataclass
class Evaluation:
    """A model and the fixed batches to measure it on; `run` does the work."""

    model: GPT
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    num_batches: int
    autocast: Callable
    description: str  # what is measured, e.g. "shakespeare (...), val split: 20 batches of 8 x 1,024 tokens, fp32"

    def run(self, on_batch: Optional[Callable[[int], None]] = None) -> dict:
        """{"val_loss", "val_bpb", "perplexity", "accuracy", "tokens", "bytes"}; `on_batch(done)` after
        each batch."""
        device = next(self.model.parameters()).device
        metrics = evaluate(self.model, _counted(self.batches, on_batch), device=device, autocast=self.autocast)
        return {
            "val_loss": metrics["val_loss"],
            "val_bpb": metrics["val_bpb"],
            "perplexity": metrics["val_perplexity"],
            "accuracy": metrics["val_accuracy"],
            "tokens": metrics["val_tokens"],
            "bytes": metrics["val_bytes"],
        }


def prepare_evaluation(request: EvalRequest) -> Evaluation:
    """Load the model and its data for `nash eval` (the run's own dataset and config by default).

    Deterministic: the batches are the data's fixed evaluation batches, whatever the training state.
    """
    from nashcli.engine.precision import resolve_precision

    if request.split not in ("train", "val"):
        raise NashError(f"--split {request.split!r}: choose train or val")
    model, config = load_model(request.source, request.checkpoint, request.device)
    _keep_freed_memory_on_cpu(model)
    tree = config.model_dump(mode="json")
    if request.dataset is not None:
        tree["data"].update(dataset=request.dataset, sft_file=None, sft_val_file=None)
    elif config.data.dataset is None and not config.is_sft:
        raise NashError(f"{request.source} names no dataset of its own: pass --data NAME_OR_DIR")
    options = {"--batch-size": ("train.batch_size", request.batch_size), "--precision": ("train.precision", request.precision)}
    config = override_config(tree, [], options, source=f"the config of {request.source}")

    device = next(model.parameters()).device
    single_process = DistributedContext(rank=0, local_rank=0, world_size=1, device=device)
    batches, data_description = build_split_batches(config, single_process, request.split)
    num_batches = request.max_batches or config.train.eval_batches
    precision = resolve_precision(config.train.precision, device)
    description = (
        f"{data_description}, {request.split} split: {num_batches} batches of {config.train.batch_size} x "
        f"{config.model.max_seq_len:,} tokens, {precision.name} on {device}"
    )
    return Evaluation(model, batches.eval_batches(num_batches), num_batches, precision.autocast, description)


@dataclass
class TaskEvalRequest:
    """What `nash eval --task` scores; None keeps the default."""

    source: str
    task: str  # a task name: hellaswag, or mc:PATH
    checkpoint: Optional[str] = None
    limit: Optional[int] = None  # the first this many examples
    task_file: Optional[Path] = None  # a local copy of the task's data instead of the download cache
    precision: Optional[str] = None
    device: str = "auto"


@dataclass
class TaskEvaluation:
    """A model and a loaded task; `run` scores it."""

    model: GPT
    task: Task
    autocast: Callable
    description: str  # e.g. "hellaswag: 500 of 10,042 examples from ..., fp32 on cpu"

    @property
    def num_examples(self) -> int:
        return len(self.task.examples)

    def run(self, on_progress: Optional[Callable[[int], None]] = None) -> dict:
        """{"task", <the task's metrics>, "count"}; `on_progress(examples done)` after each batch."""
        results = evaluate_task(self.model, self.task, autocast=self.autocast, on_progress=on_progress)
        return {"task": self.task.name, **results}


def prepare_task_evaluation(
    request: TaskEvalRequest, on_download: Optional[Callable[[int, Optional[int]], None]] = None
) -> TaskEvaluation:
    """Load the model and the task (downloading the task's data once, with `on_download(done, total)`
    bytes) for `nash eval --task`. The precision is the run's own train.precision unless asked."""
    from nashcli.engine.precision import resolve_precision

    model, config = load_model(request.source, request.checkpoint, request.device)
    _keep_freed_memory_on_cpu(model)
    task = load_task(request.task, limit=request.limit, task_file=request.task_file, on_download=on_download)
    device = next(model.parameters()).device
    if request.precision is not None:
        tree = config.model_dump(mode="json")
        config = override_config(tree, [], {"--precision": ("train.precision", request.precision)}, source=request.source)
    precision = resolve_precision(config.train.precision, device)
    return TaskEvaluation(model, task, precision.autocast, f"{task.description}, {precision.name} on {device}")


def _keep_freed_memory_on_cpu(model: GPT) -> None:
    # Evaluation allocates and frees the same large logits buffers every batch: on CPUs glibc would
    # page-fault them in afresh each time (see nashcli/engine/allocator.py), as in CPU training.
    if next(model.parameters()).device.type == "cpu":
        keep_freed_memory()


def _counted(batches: Iterable, on_batch: Optional[Callable[[int], None]]) -> Iterator:
    for done, batch in enumerate(batches, start=1):
        yield batch
        if on_batch is not None:
            on_batch(done)
