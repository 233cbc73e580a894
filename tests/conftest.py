"""Shared test set-up: keep torch to the machine's two cores and wandb off the network."""

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder, so relative runs/ and data/ never touch the checkout."""
    monkeypatch.chdir(tmp_path)
