"""`nash prepare`'s work: stream a text source through the tokenizer into train/val token shards.

Memory stays bounded: documents flow source -> segments -> a few chunks in the encoder threads ->
shard files; no list of all tokens ever exists. The dataset is built in a hidden sibling folder and
renamed into place only when complete, so an interrupted run never leaves a folder that looks ready,
and a dataset rebuilt with --force stays whole until its replacement is. One process at a time
writes a dataset (a lock), and a folder holding anything but a dataset's files is never replaced.
"""

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nashcli import __version__
from nashcli.data.encode import encode_segments, split_into_segments
from nashcli.data.dataset_meta import DatasetMeta, is_dataset_entry, is_prepared
from nashcli.data.shards import SPLITS, SplitWriter
from nashcli.data.sources import TextSource
from nashcli.data.tokenizer import get_tokenizer
from nashcli.errors import NashError
from nashcli.folders import FolderLock, check_owned, fsync_folder, swap_in

DEFAULT_VAL_FRACTION = 0.005
DEFAULT_SHARD_TOKENS = 100_000_000
# The val split gets at least VAL_MIN_TOKENS (two plays of the built-in corpus) but never more than
# VAL_MAX_SHARE of the data: a small corpus still gets a val set worth measuring, a large one exactly
# its val_fraction.
VAL_MIN_TOKENS = 50_000
VAL_MAX_SHARE = 0.1

# Called with (documents, tokens) written so far.
ProgressCallback = Callable[[int, int], None]


@dataclass
class PrepareResult:
    out_dir: Path
    meta: DatasetMeta
    elapsed_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.meta.num_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


class ValSplitter:
    """Decides, document by document and in one pass, which documents form the val split.

    A document goes to val while the val split holds no more than its target share of the tokens
    seen so far: target = max(val_fraction x seen, min(VAL_MIN_TOKENS, VAL_MAX_SHARE x seen)). The
    first document always goes to val; the rest interleave, so val samples the whole corpus.
    """

    def __init__(self, val_fraction: float):
        self.val_fraction = val_fraction

    def split_for_next_document(self, val_tokens: int, seen_tokens: int) -> str:
        if self.val_fraction == 0:
            return "train"
        target = max(self.val_fraction * seen_tokens, min(VAL_MIN_TOKENS, VAL_MAX_SHARE * seen_tokens))
        return "val" if val_tokens <= target else "train"


def prepare_dataset(
    source: TextSource,
    out_dir: Path,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    max_tokens: Optional[int] = None,
    force: bool = False,
    num_threads: Optional[int] = None,
    on_progress: Optional[ProgressCallback] = None,
) -> PrepareResult:
    """Tokenize `source` into `out_dir` (train/val shards + meta.json).

    Stops after the document that reaches `max_tokens` (or the source's own token budget). An
    existing complete dataset is rebuilt only with `force`.
    """
    budgets = [tokens for tokens in (max_tokens, source.token_budget) if tokens is not None]
    budget = min(budgets) if budgets else None
    partial_dir = out_dir.parent / f".{out_dir.name}.partial"
    with FolderLock(out_dir, "dataset"):
        _check_replaceable(out_dir, force)
        # Left by an interrupted run of nash prepare; the lock says no other one is writing it.
        _check_replaceable(partial_dir, force=True)
        shutil.rmtree(partial_dir, ignore_errors=True)
        partial_dir.mkdir(parents=True)
        started = time.perf_counter()
        try:
            meta = _write_shards(
                source, partial_dir, val_fraction, shard_tokens, budget, num_threads or os.cpu_count() or 1, on_progress
            )
            meta.write(partial_dir)
            fsync_folder(partial_dir)
            _check_replaceable(out_dir, force)  # again: the folder may have changed while we tokenized
            swap_in(partial_dir, out_dir)
        except BaseException:
            shutil.rmtree(partial_dir, ignore_errors=True)
            raise
    return PrepareResult(out_dir, meta, time.perf_counter() - started)


def _write_shards(
    source: TextSource,
    folder: Path,
    val_fraction: float,
    shard_tokens: int,
    budget: Optional[int],
    num_threads: int,
    on_progress: Optional[ProgressCallback],
) -> DatasetMeta:
    tokenizer = get_tokenizer()
    eot = np.array([tokenizer.eot_token], dtype=np.uint16)
    writers = {split: SplitWriter(folder, split, shard_tokens) for split in SPLITS}
    splitter = ValSplitter(val_fraction)
    assigned_tokens = {split: 0 for split in SPLITS}  # written + gathered for the current chunk
    max_token_id = tokenizer.eot_token
    current_split = "train"
    documents = 0
    reached_budget = False
    try:
        for chunk in encode_segments(split_into_segments(source.pieces()), tokenizer.encoding, num_threads):
            # Gather the chunk's tokens per split and write each split once: a chunk can hold
            # thousands of small documents, and one write per document would dominate.
            parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
            for segment in chunk:
                if segment.starts_document:
                    seen_tokens = assigned_tokens["train"] + assigned_tokens["val"]
                    current_split = splitter.split_for_next_document(assigned_tokens["val"], seen_tokens)
                parts[current_split].append(segment.tokens)
                assigned_tokens[current_split] += len(segment.tokens)
                if segment.ends_document:
                    parts[current_split].append(eot)
                    assigned_tokens[current_split] += 1
                    writers[current_split].info.documents += 1
                    documents += 1
                    if budget is not None and assigned_tokens["train"] + assigned_tokens["val"] >= budget:
                        reached_budget = True
                        break
            for split, split_parts in parts.items():
                if split_parts:
                    tokens = np.concatenate(split_parts)
                    max_token_id = max(max_token_id, int(tokens.max()))
                    writers[split].write(tokens)
            if on_progress is not None:
                on_progress(documents, assigned_tokens["train"] + assigned_tokens["val"])
            if reached_budget:
                break
    finally:
        for writer in writers.values():
            writer.close()
    _check_splits(source, writers)
    return DatasetMeta(
        source=source.description,
        tokenizer=tokenizer.name,
        vocab_size=tokenizer.vocab_size,
        eot_token=tokenizer.eot_token,
        max_token_id=max_token_id,
        val_fraction=val_fraction,
        nash_version=__version__,
        splits={split: writer.info for split, writer in writers.items()},
    )


def _check_splits(source: TextSource, writers: dict[str, SplitWriter]) -> None:
    documents = sum(writer.info.documents for writer in writers.values())
    if documents == 0:
        raise NashError(f"{source.description} holds no text")
    if writers["train"].info.documents == 0:
        raise NashError(
            f"{source.description} holds only {documents} document(s), all taken by the val split (it takes "
            "whole documents): add documents, split a .txt file on blank lines (--split-blank-lines), "
            "or pass --val-fraction 0"
        )


def _check_replaceable(folder: Path, force: bool) -> None:
    """Only an incomplete or (with --force) finished dataset of nash's is replaced, never other files."""
    fix = "remove or move it yourself, or choose another --out"
    check_owned(folder, is_dataset_entry, "prepared dataset", fix)
    if is_prepared(folder) and not force:
        raise NashError(f"{folder} is already prepared: pass --force to rebuild it")


def default_out_dir(source: TextSource, data_dir: Path = Path("data")) -> Path:
    """Where `nash prepare` writes when no --out is given: data/<source name>/."""
    return data_dir / source.name
