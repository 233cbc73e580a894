"""Models for inference and evaluation: from a nash run or checkpoint, or from hf: GPT-2 weights.

What `nash eval`, `nash generate` and `nash export` stand on.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch

from nashcli.config import NashConfig, override_config
from nashcli.engine.batches import build_split_batches
from nashcli.engine.distributed import DistributedContext, pick_device
from nashcli.engine.evaluate import evaluate
from nashcli.engine.locate import find_weights
from nashcli.errors import NashError
from nashcli.model.gpt import GPT


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
        """{"val_loss", "perplexity", "accuracy", "tokens"}; `on_batch(done)` after each batch."""
        device = next(self.model.parameters()).device
        metrics = evaluate(self.model, _counted(self.batches, on_batch), device=device, autocast=self.autocast)
        return {
            "val_loss": metrics["val_loss"],
            "perplexity": metrics["val_perplexity"],
            "accuracy": metrics["val_accuracy"],
            "tokens": metrics["val_tokens"],
        }


def prepare_evaluation(request: EvalRequest) -> Evaluation:
    """Load the model and its data for `nash eval` (the run's own dataset and config by default).

    Deterministic: the batches are the data's fixed evaluation batches, whatever the training state.
    """
    from nashcli.engine.precision import resolve_precision

    if request.split not in ("train", "val"):
        raise NashError(f"--split {request.split!r}: choose train or val")
    model, config = load_model(request.source, request.checkpoint, request.device)
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


def _counted(batches: Iterable, on_batch: Optional[Callable[[int], None]]) -> Iterator:
    for done, batch in enumerate(batches, start=1):
        yield batch
        if on_batch is not None:
            on_batch(done)
