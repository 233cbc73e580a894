"""Learning-rate schedule, applied to each optimizer param group's own base learning rate.

Linear warmup over `warmup_steps`, then either a cosine decay (`cosine`) or a constant phase and a
linear decay over the last `decay_fraction` of training (`wsd`: warmup-stable-decay); both end at
the group's base lr x min_lr / lr. The schedule has no state of its own: it is a pure function of
the optimizer step and, under a time budget (`max_minutes`), of the fraction of the budget used, so
a resume only needs the run's step count and elapsed time.
"""

import math
from typing import Optional

from nashcli.config.models import TrainConfig


def learning_rate_at(step: int, train: TrainConfig, base_lr: float, budget_fraction: Optional[float] = None) -> float:
    """The learning rate at optimizer step `step` (0-based: the first step taken is step 0) of a
    param group whose base learning rate is `base_lr` (train.lr for AdamW's groups).

    Warmup rises linearly to base_lr over `warmup_steps` steps (step 0 already gets base_lr /
    warmup_steps, never zero). The decay then reaches the floor at `max_steps` and stays there (a run
    extended past max_steps on resume keeps training there). budget_fraction: the fraction of
    train.max_minutes used; when given, the decay follows it instead of the steps (warmup stays in steps).

    The value is base_lr times a multiplier, computed from base_lr rather than as a product so
    that a group with base_lr == train.lr gets exactly the values of the earlier cosine-only schedule.
    """
    if step < train.warmup_steps:
        return base_lr * (step + 1) / train.warmup_steps
    floor_lr = train.min_lr * (base_lr / train.lr)  # exactly min_lr when base_lr is train.lr
    if train.schedule == "wsd":
        done = budget_fraction if budget_fraction is not None else step / train.max_steps
        decay_progress = (done - (1.0 - train.decay_fraction)) / train.decay_fraction
        return floor_lr + (1.0 - min(1.0, max(0.0, decay_progress))) * (base_lr - floor_lr)
    if budget_fraction is not None:
        progress = min(1.0, budget_fraction)
    elif train.max_steps > train.warmup_steps:
        progress = min(1.0, (step - train.warmup_steps) / (train.max_steps - train.warmup_steps))
    else:
        return base_lr
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return floor_lr + cosine * (base_lr - floor_lr)


def budget_fraction_used(elapsed_s: float, train: TrainConfig) -> Optional[float]:
    """The fraction of train.max_minutes that `elapsed_s` of the run used; None without a budget."""
    return None if train.max_minutes is None else elapsed_s / (train.max_minutes * 60.0)


def run_is_over(step: int, budget_fraction: Optional[float], train: TrainConfig) -> bool:
    """Whether the run has done its steps or used its time budget (max_steps caps a budget too)."""
    return step >= train.max_steps or (budget_fraction is not None and budget_fraction >= 1.0)
