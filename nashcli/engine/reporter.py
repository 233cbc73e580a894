"""What the trainer tells its caller while it runs (the CLI renders it; tests record it).

Only the main process reports. The records are typed: see nashcli/engine/records.py.
"""

from pathlib import Path
from typing import Protocol

from nashcli.engine.records import EvalRecord, RunStart, RunSummary, StepRecord


class Reporter(Protocol):
    def on_start(self, start: RunStart) -> None:
        """Before the first step."""

    def on_step(self, record: StepRecord) -> None:
        """After every optimizer step."""

    def on_eval(self, record: EvalRecord) -> None:
        """After an evaluation."""

    def on_checkpoint(self, path: Path) -> None:
        """After a checkpoint folder was written (once per name: last, best, step_NNNNNN)."""

    def on_end(self, summary: RunSummary) -> None:
        """When training stops, finished or interrupted."""


class SilentReporter:
    """Reports nothing (non-main processes, library use)."""

    def on_start(self, start: RunStart) -> None:
        pass

    def on_step(self, record: StepRecord) -> None:
        pass

    def on_eval(self, record: EvalRecord) -> None:
        pass

    def on_checkpoint(self, path: Path) -> None:
        pass

    def on_end(self, summary: RunSummary) -> None:
        pass
