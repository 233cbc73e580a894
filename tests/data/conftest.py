"""Fixtures for the data tests."""

from pathlib import Path

import pytest
from .corpora import DOCUMENTS, write_jsonl


@pytest.fixture
def corpus_jsonl(tmp_path) -> Path:
    """The six DOCUMENTS as a .jsonl file in tmp_path."""
    return write_jsonl(tmp_path / "corpus.jsonl", DOCUMENTS)
