"""What the trainer tells its caller while it runs (the CLI renders it; tests record it).

Only the main process reports. All arguments are plain dicts of numbers and strings.
"""

from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    def on_start(self, info: dict) -> None:
        """Before the first step: run_dir, device, precision, parameters, start_step, max_steps,
        tokens_per_step (global), world_size, batch_size, grad_accum_steps, seq_len, resumed_from,
        init_from, notes (list of one-line remarks, e.g. a model shape taken from the weights),
        sft_preview (None, or for SFT one example's "prompt" and "completion" text and the
        "examples", "truncated" and "skipped" counts)."""

    def on_step(self, metrics: dict) -> None:
        """After every optimizer step: step, tokens, train_loss, lr, grad_norm, tokens_per_s, mfu,
        elapsed_s (tokens_per_s and mfu are smoothed over recent steps)."""

    def on_eval(self, metrics: dict) -> None:
        """After an evaluation: step, val_loss, val_perplexity, val_accuracy, val_tokens, is_best."""

    def on_checkpoint(self, path: Path) -> None:
        """After a checkpoint folder was written (once per name: last, best, step_NNNNNN)."""

    def on_end(self, summary: dict) -> None:
        """When training stops (finished or interrupted): the summary.json contents, plus
        `interrupted` and `resume_command`."""


class SilentReporter:
    """Reports nothing (non-main processes, library use)."""

    def on_start(self, info: dict) -> None:
        pass

    def on_step(self, metrics: dict) -> None:
        pass

    def on_eval(self, metrics: dict) -> None:
        pass

    def on_checkpoint(self, path: Path) -> None:
        pass

    def on_end(self, summary: dict) -> None:
        pass
