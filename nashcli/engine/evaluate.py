"""Validation metrics over target tokens that are not ignored: loss, bits per byte, perplexity,
next-token accuracy; and the evaluation tasks a run scores at each evaluation."""

import contextlib
import math
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from nashcli.config import NashConfig
from nashcli.data.tokenizer import token_byte_lengths
from nashcli.engine import distributed as dist_ops
from nashcli.engine.distributed import DistributedContext
from nashcli.errors import NashError
from nashcli.model.loss import IGNORE_INDEX, padded_cross_entropy_rows
from nashcli.tasks.base import Task
from nashcli.tasks.registry import load_task
from nashcli.tasks.scoring import evaluate_task

# Token shards are uint16: every target id is below this, so one table covers any vocabulary.
MAX_TOKEN_ID = 1 << 16

# Sums a list of per-process numbers over all processes (the identity with one process).
SumAcrossProcesses = Callable[[list[float]], list[float]]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: "torch.device | str" = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    sum_across_processes: Optional[SumAcrossProcesses] = None,
) -> dict:
    """Mean loss, bits per byte, perplexity and accuracy over all non-ignored targets of `batches`.

    Every target token weighs the same, however the tokens fall into batches (an SFT batch with few
    completion tokens counts for little). Bits per byte is the summed loss in bits over the UTF-8
    bytes of the targets' text: unlike the loss per token, it does not depend on the tokenizer.
    `sum_across_processes` adds up the per-process sums when each process evaluated its own share
    of the batches (DDP). The model is put back in the mode (train/eval) it was in.

    Returns {"val_loss", "val_bpb", "val_perplexity", "val_accuracy", "val_tokens", "val_bytes"}.
    """
    device = torch.device(device)
    byte_lengths = _byte_length_table(device)
    was_training = model.training
    model.eval()
    # Per batch: the loss sum in fp32 and the counts in int64 stay on the device (no sync per batch,
    # and no float64, which MPS lacks); they are added up on the CPU in float64 at the end.
    loss_sums, counts = [], []
    try:
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast():
                logits = model(inputs)  # (B, T, vocab_size), a view of the padded head's output
            targets = targets.flatten()  # (B*T,)
            losses, predictions = padded_cross_entropy_rows(logits.flatten(0, 1), targets, logits.shape[-1])
            kept = targets != IGNORE_INDEX
            target_bytes = byte_lengths[targets.masked_fill(~kept, 0)] * kept
            loss_sums.append(losses.sum())
            counts.append(torch.stack([((predictions == targets) & kept).sum(), kept.sum(), target_bytes.sum()]))
    finally:
        model.train(was_training)
    loss_sum = torch.stack(loss_sums).cpu().double().sum().item() if loss_sums else 0.0
    correct, count, num_bytes = torch.stack(counts).sum(dim=0).tolist() if counts else (0, 0, 0)
    if sum_across_processes is not None:
        loss_sum, correct, count, num_bytes = sum_across_processes([loss_sum, correct, count, num_bytes])
    if count == 0:
        nan = float("nan")
        return {"val_loss": nan, "val_bpb": nan, "val_perplexity": nan, "val_accuracy": nan, "val_tokens": 0, "val_bytes": 0}
    loss = loss_sum / count
    return {
        "val_loss": loss,
        "val_bpb": loss_sum / (math.log(2) * num_bytes) if num_bytes else float("nan"),
        "val_perplexity": math.exp(min(loss, 700.0)),  # exp overflows a float past ~709
        "val_accuracy": correct / count,
        "val_tokens": int(count),
        "val_bytes": int(num_bytes),
    }


def _byte_length_table(device: torch.device) -> torch.Tensor:
    """(MAX_TOKEN_ID,) int64: the UTF-8 bytes of each GPT-2 token's text; 0 past the vocabulary."""
    lengths = token_byte_lengths()
    table = torch.zeros(MAX_TOKEN_ID, dtype=torch.long)
    table[: len(lengths)] = torch.tensor(lengths, dtype=torch.long)
    return table.to(device)


def process_summer(context: DistributedContext) -> Optional[SumAcrossProcesses]:
    """Sums over the processes of `context` (float64 on its device: exact for counts), or None alone."""
    if not context.is_distributed:
        return None

    def sum_values(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
        return dist_ops.all_reduce_sum(tensor, context).tolist()

    return sum_values


def load_eval_tasks(config: NashConfig, context: DistributedContext) -> list[Task]:
    """The tasks of train.eval_tasks, loaded and checked now, so that a task that cannot be loaded
    fails the run before its first step (with one line), not at its first evaluation.

    Rank 0 loads first (downloading into the cache what is missing) while the others wait; they
    then read the cache instead of downloading it too. Every process raises rank 0's error.
    """
    specs, limit = config.train.eval_tasks, config.train.eval_task_limit
    if not specs:
        return []
    tasks: list[Task] = []
    error = None
    if context.is_main:
        try:
            tasks = [load_task(spec, limit=limit) for spec in specs]
        except NashError as raised:
            error = f"train.eval_tasks: {raised}"
    error = dist_ops.broadcast_object(error, context)
    if error is not None:
        raise NashError(error)
    if not context.is_main:
        tasks = [load_task(spec, limit=limit) for spec in specs]
    return tasks


def run_eval_tasks(
    model: nn.Module,
    tasks: list[Task],
    context: DistributedContext,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Every task's metrics under task-prefixed names ({"hellaswag_acc": .., "hellaswag_acc_norm": ..}),
    each process scoring its share of the examples."""
    metrics: dict[str, float] = {}
    for task in tasks:
        results = evaluate_task(
            model,
            task,
            autocast=autocast,
            rank=context.rank,
            world_size=context.world_size,
            sum_across_processes=process_summer(context),
        )
        metrics.update({f"{task.name}_{name}": results[name] for name in task.metric_names})
    return metrics
