"""Run folders written by hand in the documented format (config.yaml, metrics.jsonl, summary.json)."""

import json
import math
from pathlib import Path

import pytest
import yaml

from nashcli.config import NashConfig


def build_records(steps: int = 60, eval_every: int = 20, start_loss: float = 10.0, tokens_per_step: int = 1024):
    """Training records every step with a decaying, zig-zagging loss, evaluation records every `eval_every`."""
    records = []
    for step in range(1, steps + 1):
        loss = start_loss * math.exp(-step / 30) + 1.0 + (0.3 if step % 2 else -0.3)
        records.append(
            {"step": step, "tokens": step * tokens_per_step, "train_loss": loss, "lr": 1e-3,
             "tokens_per_s": 500.0, "elapsed_s": step * 2.0}
        )
        if step % eval_every == 0:
            val_loss = start_loss * math.exp(-step / 30) + 1.2
            records.append(
                {"step": step, "tokens": step * tokens_per_step, "elapsed_s": step * 2.0 + 1.0,
                 "val_loss": val_loss, "val_perplexity": math.exp(val_loss), "val_accuracy": 0.5 / val_loss}
            )
    return records


def write_run(root: Path, records: list[dict], overrides: dict | None = None, summary: dict | None = None) -> Path:
    """A run folder at `root`: config.yaml from NashConfig(name=root.name, **overrides), the records, a summary."""
    root.mkdir(parents=True)
    config = NashConfig(name=root.name, **(overrides or {})).model_dump(mode="json")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    (root / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture
def make_run(tmp_path):
    """make_run(name, records=None, overrides=None, summary=None) -> folder under tmp_path/runs."""

    def make(name: str, records=None, overrides=None, summary=None) -> Path:
        records = records if records is not None else build_records()
        return write_run(tmp_path / "runs" / name, records, overrides, summary)

    return make


@pytest.fixture
def synthetic_records():
    """synthetic_records(steps=60, eval_every=20, start_loss=10.0, tokens_per_step=1024) -> records."""
    return build_records
