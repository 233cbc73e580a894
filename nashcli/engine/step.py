"""One optimizer step's forward and backward passes over its micro-batches.

The loss of a step is the sum of cross-entropy over every non-ignored target token of all its
micro-batches on all processes, divided by the number of those tokens. Dividing each micro-batch
by its own token count, or by the number of micro-batches (build-nanogpt), is only right when every
micro-batch has the same number of targets; SFT batches with masked prompts and padding do not.
So the global count is taken first, and every micro-batch's summed loss is divided by it.
"""

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from nashcli.engine.distributed import DistributedContext, all_reduce_sum
from nashcli.engine.fsdp import gradient_sync
from nashcli.engine.precision import Precision
from nashcli.model.loss import IGNORE_INDEX

MicroBatch = tuple[torch.Tensor, torch.Tensor]  # inputs, targets: (B, T) int64 each


@dataclass
class StepTotals:
    loss_sum: torch.Tensor  # this process's summed loss over its targets, fp32 scalar, detached
    target_tokens: int  # non-ignored targets of the step, all processes
    input_tokens: int  # input positions of the step (padding included), all processes


def forward_backward(
    model: nn.Module,
    micro_batches: Sequence[MicroBatch],
    context: DistributedContext,
    precision: Precision,
    grad_scaler: torch.amp.GradScaler,
) -> StepTotals:
    """Accumulate into `.grad` the gradient of the step's mean loss over its target tokens.

    `micro_batches` must already be on the device. Under DDP (FSDP), gradients are all-reduced
    (reduce-scattered) only in the last micro-batch's backward, and both average them over
    processes, so each process scales its loss by world_size / global count to make that average the
    global mean.
    """
    counts = torch.stack(
        [
            sum((targets != IGNORE_INDEX).sum() for _, targets in micro_batches),
            torch.tensor(sum(inputs.numel() for inputs, _ in micro_batches), device=context.device),
        ]
    )
    all_reduce_sum(counts, context)
    target_tokens, input_tokens = counts.tolist()
    # An all-masked step (possible in SFT) has no loss; dividing by 1 keeps the gradient zero, not NaN.
    loss_scale = context.world_size / max(target_tokens, 1)
    loss_sum = torch.zeros((), device=context.device)
    for index, (inputs, targets) in enumerate(micro_batches):
        is_last = index == len(micro_batches) - 1
        with gradient_sync(model, sync=is_last):
            with precision.autocast():
                micro_loss_sum = model(inputs, targets)  # summed over non-ignored targets, fp32
            grad_scaler.scale(micro_loss_sum * loss_scale).backward()
        loss_sum += micro_loss_sum.detach()
    return StepTotals(loss_sum=loss_sum, target_tokens=int(target_tokens), input_tokens=int(input_tokens))
