"""A run's counters (steps, tokens, losses: saved in checkpoints), the clock of this session (how
fast its steps go, how long the run has taken) and the process's peak memory."""

import math
import resource
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import torch

from nashcli.errors import NashError
from nashcli.value_checks import is_finite_number, is_int


@dataclass
class RunCounters:
    """The counters of a run that a checkpoint saves and a resume restores."""

    step: int = 0  # optimizer steps done
    tokens: int = 0  # input tokens trained on, all processes
    elapsed_s: float = 0.0  # wall time of the sessions before this one
    best_val_loss: float = math.inf
    last_train_loss: float = math.nan
    last_val_loss: Optional[float] = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters; NashError, before any is set, unless `state` is what state_dict() gives."""
        problem = _progress_problem(state)
        if problem is not None:
            raise NashError(f"the run counters are damaged: {problem}")
        for key, value in state.items():
            setattr(self, key, value)


def _progress_problem(state: object) -> Optional[str]:
    names = {field.name for field in fields(RunCounters)}
    if not isinstance(state, dict) or set(state) != names:
        return f"they must be exactly {', '.join(sorted(names))}"
    if not all(is_int(state[key]) and state[key] >= 0 for key in ("step", "tokens")):
        return "step and tokens must be integers >= 0"
    if not (is_finite_number(state["elapsed_s"]) and state["elapsed_s"] >= 0):
        return "elapsed_s must be a number of seconds >= 0"
    # Losses may be NaN or infinite (before the first step or evaluation); last_val_loss None.
    losses_ok = isinstance(state["best_val_loss"], float) and isinstance(state["last_train_loss"], float)
    if not losses_ok or not (state["last_val_loss"] is None or isinstance(state["last_val_loss"], float)):
        return "best_val_loss and last_train_loss must be floats, last_val_loss a float or None"
    return None


class SessionClock:
    """Tokens per second of the training steps (evaluation and checkpoint time excluded), and the
    run's elapsed wall time including earlier sessions of a resumed run.

    The first step of a session pays for warm-up (allocations, compilation); it is left out of the
    averages once later steps exist.
    """

    def __init__(self, window_steps: int = 10):
        self.started = time.perf_counter()
        self.recent: deque = deque(maxlen=window_steps)  # (tokens, seconds) of the latest steps
        self.steps = 0
        self.first_step = (0, 0.0)
        self.totals = [0, 0.0]  # tokens, seconds over all steps after the first
        self.interval = [0, 0.0]  # since the last interval_tokens_per_s()

    def record_step(self, tokens: int, seconds: float) -> float:
        """Count a step; returns tokens/s over the recent window (what a live display shows)."""
        self.steps += 1
        if self.steps == 1:
            self.first_step = (tokens, seconds)
        else:
            self.totals[0] += tokens
            self.totals[1] += seconds
            self.recent.append((tokens, seconds))
        self.interval[0] += tokens
        self.interval[1] += seconds
        window = self.recent or [self.first_step]
        return _rate(sum(t for t, _ in window), sum(s for _, s in window))

    def interval_tokens_per_s(self) -> float:
        """Tokens/s since the previous call (a metrics record covers the steps since the last one)."""
        rate = _rate(*self.interval)
        self.interval = [0, 0.0]
        return rate

    def mean_tokens_per_s(self) -> float:
        return _rate(*self.totals) if self.steps > 1 else _rate(*self.first_step)

    def elapsed(self, earlier_sessions_s: float = 0.0) -> float:
        return earlier_sessions_s + time.perf_counter() - self.started


def _rate(tokens: int, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated GPU memory on CUDA, else the peak resident set size.

    Linux's VmHWM is read first: ru_maxrss can include the RSS of the process this one was forked
    from before its exec.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
