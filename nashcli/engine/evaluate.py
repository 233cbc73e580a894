"""Validation metrics over target tokens that are not ignored: loss, perplexity, next-token accuracy."""

import contextlib
import math
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nashcli.model.loss import IGNORE_INDEX


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: "torch.device | str" = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    sum_across_processes: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> dict:
    """Mean loss, perplexity and accuracy over all non-ignored targets of `batches`.

    Every target token weighs the same, however the tokens fall into batches (an SFT batch with few
    completion tokens counts for little). `sum_across_processes` adds up the per-process sums when
    each process evaluated its own share of the batches (DDP). The model is put back in the mode
    (train/eval) it was in.

    Returns {"val_loss", "val_perplexity", "val_accuracy", "val_tokens"}.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct predictions, targets
    try:
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast():
                logits = model(inputs)  # (B, T, vocab_size)
            logits = logits.float().flatten(0, 1)  # (B*T, vocab_size)
            targets = targets.flatten()  # (B*T,)
            kept = targets != IGNORE_INDEX
            loss_sum = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
            correct = ((logits.argmax(dim=-1) == targets) & kept).sum()
            sums += torch.stack([loss_sum.double(), correct.double(), kept.sum().double()])
    finally:
        model.train(was_training)
    if sum_across_processes is not None:
        sums = sum_across_processes(sums)
    loss_sum, correct, count = sums.tolist()
    if count == 0:
        return {"val_loss": float("nan"), "val_perplexity": float("nan"), "val_accuracy": float("nan"), "val_tokens": 0}
    loss = loss_sum / count
    return {
        "val_loss": loss,
        "val_perplexity": math.exp(min(loss, 700.0)),  # exp overflows a float past ~709
        "val_accuracy": correct / count,
        "val_tokens": int(count),
    }
