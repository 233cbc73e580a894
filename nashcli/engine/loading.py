"""Models for inference and evaluation: from a nash run or checkpoint, or from hf: GPT-2 weights.

What `nash eval`, `nash generate` and `nash export` stand on.
"""

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from nashcli.config import NashConfig
from nashcli.engine.batches import build_batches
from nashcli.engine.checkpoint import load_checkpoint_model, resolve_checkpoint_dir
from nashcli.engine.distributed import DistributedContext, pick_device
from nashcli.engine.evaluate import evaluate
from nashcli.engine.init_from import HF_PREFIX
from nashcli.errors import NashError
from nashcli.model.gpt import GPT

CHECKPOINT_CHOICES = ("best", "last")


def load_model(source: str, checkpoint: Optional[str] = None, device: str = "auto") -> tuple[GPT, NashConfig]:
    """(GPT in eval mode on `device`, the config it was trained with).

    `source` is a run folder or name, a checkpoint folder, or hf:PATH_OR_ID. For a run, `checkpoint`
    picks `best` or `last`; None means best if the run has one, else last.
    """
    if checkpoint is not None and checkpoint not in CHECKPOINT_CHOICES:
        raise NashError(f"--checkpoint {checkpoint!r}: choose best or last")
    target = pick_device(device, local_rank=0, world_size=1)
    if source.startswith(HF_PREFIX):
        from nashcli.model.hf import load_hf_gpt2

        model_config, state_dict = load_hf_gpt2(source[len(HF_PREFIX) :])
        model = GPT(model_config)
        model.load_state_dict(state_dict)
        return model.to(target).eval(), NashConfig(model=model_config)
    if checkpoint is None:
        try:
            resolve_checkpoint_dir(source, "best")
            checkpoint = "best"
        except NashError:  # never evaluated: no best checkpoint
            checkpoint = "last"
    return load_checkpoint_model(source, which=checkpoint, device=target)


@dataclass
class EvalRequest:
    """What `nash eval` measures; None keeps the run's own setting."""

    source: str
    checkpoint: Optional[str] = None
    dataset: Optional[str] = None  # a prepared dataset name or folder
    split: str = "val"
    max_batches: Optional[int] = None  # default: the run's train.eval_batches
    batch_size: Optional[int] = None
    device: str = "auto"


def evaluate_source(request: EvalRequest, on_batch: Optional[Callable[[int, int], None]] = None) -> dict:
    """Loss, perplexity, accuracy and token count of a model on a split of its data (or another).

    Deterministic: the batches are the data's fixed evaluation batches, whatever the training state.
    `on_batch(done, total)` is called after each batch (for a progress bar).
    """
    from nashcli.engine.precision import resolve_precision

    if request.split not in ("train", "val"):
        raise NashError(f"--split {request.split!r}: choose train or val")
    model, config = load_model(request.source, request.checkpoint, request.device)
    updates: dict = {}
    if request.dataset is not None:
        updates["data"] = config.data.model_copy(update={"dataset": request.dataset, "sft_file": None})
    elif config.data.dataset is None and not config.is_sft:
        raise NashError(f"{request.source} names no dataset of its own: pass --data NAME_OR_DIR")
    train_settings = {"batch_size": request.batch_size} if request.batch_size else {}
    updates["train"] = config.train.model_copy(update=train_settings)
    config = config.model_copy(update=updates)

    device = next(model.parameters()).device
    single_process = DistributedContext(rank=0, local_rank=0, world_size=1, device=device)
    batches = getattr(build_batches(config, single_process), request.split)
    precision = resolve_precision(config.train.precision, device)
    num_batches = request.max_batches or config.train.eval_batches
    metrics = evaluate(
        model, _counted(batches.eval_batches(num_batches), num_batches, on_batch), device=device, autocast=precision.autocast
    )
    return {
        "val_loss": metrics["val_loss"],
        "perplexity": metrics["val_perplexity"],
        "accuracy": metrics["val_accuracy"],
        "tokens": metrics["val_tokens"],
    }



def _counted(batches: Iterator, total: int, on_batch: Optional[Callable[[int, int], None]]) -> Iterator:
    for done, batch in enumerate(batches, start=1):
        yield batch
        if on_batch is not None:
            on_batch(done, total)
