"""Shared test set-up: each test in its own folder, wandb offline, and a tiny prepared corpus with
the settings of a tiny model that trains on it in a fraction of a second per step."""

import gzip
import json
import os
from pathlib import Path

import pytest

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
