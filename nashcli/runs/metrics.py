"""Where metrics go: one `log(metrics, step)` over sinks — the run's metrics.jsonl always, wandb
when configured. (The live console display is the trainer's reporter, in nashcli/cli.)"""

import json
import os
import uuid
from pathlib import Path
from typing import Optional, Protocol, Sequence

from nashcli.config import NashConfig
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout


class MetricsSink(Protocol):
    def log(self, metrics: dict, step: int) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """Appends one JSON object per record to metrics.jsonl, flushed at once (a crash loses no record)."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def log(self, metrics: dict, step: int) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class WandbSink:
    """A wandb run in the run folder (offline needs no account; online never prompts for a login)."""

    def __init__(self, layout: RunLayout, config: NashConfig, resume: bool):
        import wandb

        layout.wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=config.metrics.wandb_project,
            name=layout.name,
            id=_wandb_run_id(layout),
            # Absolute: wandb's service process may run in another working directory.
            dir=str(layout.root.resolve()),
            mode=config.metrics.wandb,
            config=config.model_dump(mode="json"),
            resume="allow" if resume else None,
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def _wandb_run_id(layout: RunLayout) -> str:
    # Kept in the run folder so that a resumed run continues the same wandb run.
    path = layout.wandb_dir / "nash_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id)
    return run_id


def check_sinks(config: NashConfig) -> None:
    """Refuse, before a run touches its folder, a sink that cannot start: wandb online without
    credentials (online never prompts for a login)."""
    if config.metrics.wandb == "online":
        import wandb

        if not wandb.login(prompt=False, verify=False):
            raise NashError(
                "metrics.wandb=online needs wandb credentials: run `wandb login` or set WANDB_API_KEY, "
                "or use --set metrics.wandb=offline"
            )


class MetricsLogger:
    """Sends every record to all sinks."""

    def __init__(self, sinks: Sequence[MetricsSink]):
        self.sinks = list(sinks)

    def log(self, metrics: dict, step: int) -> None:
        for sink in self.sinks:
            sink.log(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_metrics(layout: RunLayout, config: NashConfig, resume_step: Optional[int] = None) -> MetricsLogger:
    """The sinks of a run. On resume, records past `resume_step` (logged after the checkpoint the run
    resumes from) are dropped first, so that the file holds each step once."""
    layout.root.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
        truncate_metrics(layout.metrics_path, resume_step)
    sinks: list[MetricsSink] = []
    if config.metrics.wandb != "disabled":  # first: it is the one that can refuse to start
        sinks.append(WandbSink(layout, config, resume=resume_step is not None))
    sinks.append(JsonlSink(layout.metrics_path))
    return MetricsLogger(sinks)


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl, in order: JSON objects of numbers with an integer step.

    A torn last line (the process was killed while writing it) is skipped; any other invalid line is
    an error naming the line.
    """
    if not Path(path).is_file():
        raise NashError(f"no metrics file {path}: has this run logged a step yet?")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise NashError(f"{path} is not UTF-8 text: is it a metrics file written by nash train?") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise NashError(f"{path} line {number} is not valid JSON: {error.msg}") from None
        if not _is_metrics_record(record):
            raise NashError(
                f"{path} line {number} is not a metrics record (a JSON object of numbers with an integer "
                "step): delete or fix that line"
            )
        records.append(record)
    return records


def _is_metrics_record(record) -> bool:
    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    return (
        isinstance(record, dict)
        and isinstance(record.get("step"), int)
        and not isinstance(record["step"], bool)
        and record["step"] >= 0
        and all(value is None or is_number(value) for value in record.values())
    )


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the records with step <= last_step (atomically: write a new file, then rename)."""
    if not path.is_file():
        return
    kept = [record for record in read_metrics(path) if record.get("step", 0) <= last_step]
    temporary = path.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
    os.replace(temporary, path)

