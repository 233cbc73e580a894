"""Learning-rate schedule: linear warmup, then cosine decay to `min_lr`.

The schedule has no state of its own: the learning rate is a pure function of the optimizer step,
so resuming from a checkpoint only needs the step count.
"""

import math

from nashcli.config.models import TrainConfig


def learning_rate_at(step: int, train: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based: the first step taken is step 0).

    Warmup rises linearly to `lr` over `warmup_steps` steps (step 0 already gets lr / warmup_steps,
    never zero); cosine decay then goes from `lr` at the end of warmup to `min_lr` at `max_steps`,
    and stays at `min_lr` after it (a run extended past max_steps on resume keeps training there).
    """
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    decay_steps = train.max_steps - train.warmup_steps
    if decay_steps <= 0:
        return train.lr
    progress = min(1.0, (step - train.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return train.min_lr + cosine * (train.lr - train.min_lr)
