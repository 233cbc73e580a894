"""Shared test set-up: each test in its own folder, wandb offline, a tiny prepared corpus with the
settings of a tiny model that trains on it in a fraction of a second per step, and run folders
written by hand in the documented format (config.yaml, metrics.jsonl, summary.json)."""

import gzip
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from nashcli.assets import SHAKESPEARE_PATH
from nashcli.config import NashConfig, resolve_config

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder, so relative runs/ and data/ never touch the checkout."""
    monkeypatch.chdir(tmp_path)


TINY_MODEL = [
    "model.n_layers=2",
    "model.n_heads=2",
    "model.d_model=32",
    "model.d_ff=64",
    "model.max_seq_len=16",
    "model.vocab_size=50257",
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """About 20k tokens of one play, paragraphs as documents, 10% held out for validation."""
    from nashcli.data.prepare import prepare_dataset
    from nashcli.data.sources import LocalFiles

    with gzip.open(SHAKESPEARE_PATH, "rt", encoding="utf-8") as file:
        text = json.loads(file.readline())["text"][:80_000]
    folder = tmp_path_factory.mktemp("tiny-corpus")
    (folder / "play.txt").write_text(text, encoding="utf-8")
    source = LocalFiles([folder / "play.txt"], name="tiny", description="one play", split_blank_lines=True)
    out_dir = folder / "tiny"
    prepare_dataset(source, out_dir, val_fraction=0.1, num_threads=1)
    return out_dir


@pytest.fixture
def tiny_model_settings() -> list[str]:
    """`--set` values of the tiny model (2 layers, 2 heads, 32 wide, context 16, GPT-2 vocabulary)."""
    return list(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_config(tiny_dataset):
    """tiny_config(*overrides) -> a NashConfig training the tiny model on the tiny dataset in fp32."""

    def make(*overrides: str) -> NashConfig:
        base = TINY_MODEL + [
            f"data.dataset={tiny_dataset}",
            "train.batch_size=4",
            "train.max_steps=6",
            "train.warmup_steps=2",
            "train.lr=1e-3",
            "train.min_lr=1e-4",
            "train.eval_interval=3",
            "train.eval_batches=2",
            "train.checkpoint_interval=3",
            "train.precision=fp32",
            "metrics.log_interval=1",
        ]
        return resolve_config(None, base + list(overrides))

    return make


@pytest.fixture
def train_args(tiny_dataset, tiny_model_settings):
    """train_args(*overrides) -> `--set` arguments of `nash train` that train the tiny model on the tiny
    corpus: 4 steps of 4 sequences, eval and checkpoint every 2."""

    def make(*extra: str) -> list[str]:
        values = tiny_model_settings + [
            f"data.dataset={tiny_dataset}",
            "train.batch_size=4",
            "train.max_steps=4",
            "train.warmup_steps=1",
            "train.eval_interval=2",
            "train.eval_batches=2",
            "train.checkpoint_interval=2",
            "metrics.log_interval=1",
            *extra,
        ]
        return [arg for value in values for arg in ("--set", value)]

    return make


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


@pytest.fixture
def reseal_checkpoint():
    """reseal_checkpoint(checkpoint_dir, edit=None): record the files' current sizes and sha256 in
    checkpoint.json, apply edit(meta) to its content, and record that content's sha256, as a hostile
    checkpoint with matching checksums would have them."""
    import hashlib

    from nashcli.checksums import sha256_file

    def reseal(checkpoint_dir: Path, edit=None) -> None:
        path = checkpoint_dir / "checkpoint.json"
        meta = json.loads(path.read_text())
        meta.pop("content_sha256")
        for name in meta["files"]:
            meta["files"][name] = {
                "sha256": sha256_file(checkpoint_dir / name), "size_bytes": (checkpoint_dir / name).stat().st_size
            }
        if edit is not None:
            edit(meta)
        canonical = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        path.write_text(json.dumps({**meta, "content_sha256": hashlib.sha256(canonical).hexdigest()}, indent=2))

    return reseal
