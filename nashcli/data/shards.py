"""The on-disk format of token shards, the files of a prepared dataset (its meta.json, which lists
them, is in dataset_meta.py).

A dataset folder (`data/<name>/`) holds `train_NNN.bin` and `val_NNN.bin` shards and a `meta.json`
that lists them. A shard is a 32-byte header followed by uint16 token ids:

    offset  size  field
    0       8     magic b"NASHTOK\\0"
    8       4     format version (uint32, little-endian)
    12      4     bytes per token (uint32, always 2)
    16      8     number of tokens (uint64)
    24      8     reserved (zeros)

The writer puts the real token count into the header only when the shard is closed, so a shard cut
short by a crash or a copy disagrees with its file size and is refused when read. meta.json records
each shard's token count and the sha256 of the whole file (what `sha256sum` prints); readers check
both when they open a shard, so a flipped byte is refused before training on it. Datasets prepared
before checksums have no sha256 and are read without that check.
"""

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from nashcli.checksums import sha256_file, verify_sha256
from nashcli.errors import NashError

SHARD_MAGIC = b"NASHTOK\0"
SHARD_FORMAT_VERSION = 1
SHARD_HEADER = struct.Struct("<8sIIQ8x")
SHARD_HEADER_BYTES = SHARD_HEADER.size  # 32
TOKEN_DTYPE = np.uint16
SPLITS = ("train", "val")
SHARD_FILE_NAME = re.compile(r"(train|val)_\d{3,}\.bin")  # matched whole (fullmatch): no path, no newline


def shard_file_name(split: str, index: int) -> str:
    return f"{split}_{index:03d}.bin"


@dataclass
class ShardInfo:
    file: str
    tokens: int
    sha256: Optional[str] = None  # None in datasets prepared before checksums


def open_shard(path: Path, listed: Optional[ShardInfo] = None) -> np.ndarray:
    """Memory-map a shard's tokens (read-only) after checking its header against its size, and
    against its `listed` entry of meta.json when given: token count, then sha256 (the whole file is
    read once, ~1.5 GB/s).

    NashError for a missing, unreadable, foreign, newer-format, truncated or damaged file.
    """
    try:
        size_bytes = path.stat().st_size
        with open(path, "rb") as file:
            header = file.read(SHARD_HEADER_BYTES)
    except FileNotFoundError:
        raise NashError(f"token shard {path} is missing: re-run `nash prepare` with --force") from None
    except OSError as error:
        raise NashError(
            f"token shard {path} could not be read ({error.strerror or error}): check its permissions, or re-run "
            "`nash prepare` with --force"
        ) from None
    if len(header) < SHARD_HEADER_BYTES or header[:8] != SHARD_MAGIC:
        raise NashError(f"{path} is not a nash token shard (bad header): re-run `nash prepare` with --force")
    _, version, token_bytes, num_tokens = SHARD_HEADER.unpack(header)
    if version != SHARD_FORMAT_VERSION or token_bytes != TOKEN_DTYPE().itemsize:
        raise NashError(
            f"{path} has shard format {version} ({token_bytes}-byte tokens); this nash reads format "
            f"{SHARD_FORMAT_VERSION}: re-run `nash prepare` with --force"
        )
    data_bytes = size_bytes - SHARD_HEADER_BYTES
    if data_bytes != num_tokens * token_bytes:
        raise NashError(
            f"{path} is truncated or damaged: its header says {num_tokens:,} tokens, the file holds "
            f"{data_bytes // token_bytes:,}: re-run `nash prepare` with --force"
        )
    if listed is not None:
        _check_listed(path, num_tokens, listed)
    if num_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)  # a zero-length file cannot be memory-mapped
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=SHARD_HEADER_BYTES, shape=(num_tokens,))


def _check_listed(path: Path, num_tokens: int, listed: ShardInfo) -> None:
    fix = "re-run `nash prepare` with --force"
    if num_tokens != listed.tokens:
        raise NashError(
            f"{path} holds {num_tokens:,} tokens but meta.json lists {listed.tokens:,}, so the dataset is damaged "
            f"or mixed with another one: {fix}"
        )
    if listed.sha256 is not None:
        verify_sha256(path, listed.sha256, fix)


class ShardWriter:
    """Appends token arrays to one shard file; `close()` seals the header with the final count and
    then hashes the closed file (`sha256`)."""

    def __init__(self, path: Path):
        self.path = path
        self.num_tokens = 0
        self.sha256: Optional[str] = None
        self._file: BinaryIO = open(path, "wb")
        # A zero count until close(): a file abandoned half-written never validates.
        self._file.write(SHARD_HEADER.pack(SHARD_MAGIC, SHARD_FORMAT_VERSION, TOKEN_DTYPE().itemsize, 0))

    def write(self, tokens: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE).data)
        self.num_tokens += len(tokens)

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(
            SHARD_HEADER.pack(SHARD_MAGIC, SHARD_FORMAT_VERSION, TOKEN_DTYPE().itemsize, self.num_tokens)
        )
        self._file.close()
        # Hashing the closed file (still in the page cache) costs ~0.1 s per 50M tokens, as little as
        # hashing while appending, and gives the file's own digest, so `sha256sum` can check it too.
        self.sha256 = sha256_file(self.path)


@dataclass
class SplitInfo:
    documents: int = 0
    tokens: int = 0
    shards: list[ShardInfo] = field(default_factory=list)


class SplitWriter:
    """Writes one split as a sequence of shards of at most `shard_tokens` tokens each.

    Documents may continue from one shard into the next; readers treat each shard as its own stream.
    """

    def __init__(self, folder: Path, split: str, shard_tokens: int):
        if shard_tokens < 1:
            raise ValueError("shard_tokens must be positive")
        self.folder = folder
        self.split = split
        self.shard_tokens = shard_tokens
        self.info = SplitInfo()
        self._shard: Optional[ShardWriter] = None

    def write(self, tokens: np.ndarray) -> None:
        """Append tokens (uint16), opening a new shard whenever the current one is full."""
        start = 0
        while start < len(tokens):
            if self._shard is None:
                self._shard = ShardWriter(self.folder / shard_file_name(self.split, len(self.info.shards)))
                self.info.shards.append(ShardInfo(self._shard.path.name, 0))
            take = min(len(tokens) - start, self.shard_tokens - self._shard.num_tokens)
            self._shard.write(tokens[start : start + take])
            start += take
            self.info.shards[-1].tokens = self._shard.num_tokens
            if self._shard.num_tokens == self.shard_tokens:
                self._close_shard()
        self.info.tokens += len(tokens)

    def close(self) -> None:
        if self._shard is not None:
            self._close_shard()

    def _close_shard(self) -> None:
        self._shard.close()
        self.info.shards[-1].sha256 = self._shard.sha256
        self._shard = None
