"""Small corpora and readers of prepared splits, shared by the data and prepare tests."""

import json
from pathlib import Path

import numpy as np

from nashcli.data.dataset_meta import DatasetMeta
from nashcli.data.shards import ShardInfo, ShardWriter, SplitInfo, open_shard, shard_file_name

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


def write_parquet_dataset(folder: Path, splits: dict[str, list[str]]) -> Path:
    """A dataset folder laid out as the hub serves one: data/<split>-NNNNN-of-NNNNN.parquet, each
    split in two files (so `datasets` must read them in order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    for split, texts in splits.items():
        halves = [texts[: len(texts) // 2], texts[len(texts) // 2 :]]
        for index, half in enumerate(halves):
            table = pa.table({"text": half, "id": list(range(len(half)))})
            pq.write_table(table, folder / "data" / f"{split}-{index:05d}-of-00002.parquet")
    return folder


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


def make_dataset(folder, train_shard_lengths=(1000, 777, 50), val_tokens=300, max_token_id=50256):
    """A dataset whose token at global position p is p % 50000 (so windows are easy to check)."""
    folder.mkdir(parents=True)
    splits = {}
    for split, lengths in (("train", train_shard_lengths), ("val", (val_tokens,) if val_tokens else ())):
        info = SplitInfo(documents=len(lengths))
        position = 0
        for index, length in enumerate(lengths):
            writer = ShardWriter(folder / shard_file_name(split, index))
            writer.write((np.arange(position, position + length) % 50000).astype(np.uint16))
            writer.close()
            info.shards.append(ShardInfo(writer.path.name, length, writer.sha256))
            info.tokens += length
            position += length
        splits[split] = info
    DatasetMeta("test", "gpt2", 50257, 50256, max_token_id, 0.1, "0", splits).write(folder)
    return folder
