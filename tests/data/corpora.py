"""Small corpora and readers of prepared splits, shared by the data and prepare tests."""

import json
from pathlib import Path

import numpy as np
from nashcli.data.dataset_meta import DatasetMeta
from nashcli.data.shards import open_shard

# Six short documents with varied text: punctuation, digits, unicode, blank lines inside a document.
DOCUMENTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "All:\nSpeak, speak.\n\nYou are all resolved rather to die than to famish?",
    "Numbers 12345 and 3.14159, tabs\tand  double  spaces.",
    "Ünïcödé — naïve café; 日本語のテキスト 🤖",
    "It's a contraction-heavy line: we'll, they've, I'm, she'd.",
    "The end <|endoftext|> is ordinary text here.",
]


def write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    with open(path, "w", encoding="utf-8") as file:
        for text in texts:
            file.write(json.dumps({field: text}) + "\n")
    return path


def split_tokens(dataset_dir: Path, split: str) -> np.ndarray:
    """All tokens of a split, shards concatenated (tests only: fine for small datasets)."""
    meta = DatasetMeta.read(dataset_dir)
    shards = [np.asarray(open_shard(dataset_dir / shard.file)) for shard in meta.splits[split].shards]
    return np.concatenate(shards) if shards else np.zeros(0, dtype=np.uint16)


def split_documents(tokens: np.ndarray, eot: int = 50256) -> list[list[int]]:
    """Token lists of the documents of a split (each ends with EOT in the shards)."""
    documents, current = [], []
    for token in tokens.tolist():
        if token == eot:
            documents.append(current)
            current = []
        else:
            current.append(token)
    assert current == [], "a split must end with <|endoftext|>"
    return documents
