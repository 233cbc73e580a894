"""The on-disk format of a prepared dataset: token shards and meta.json.

A dataset folder (`data/<name>/`) holds `train_NNN.bin` and `val_NNN.bin` shards and a `meta.json`
that lists them. A shard is a 32-byte header followed by uint16 token ids:

    offset  size  field
    0       8     magic b"NASHTOK\\0"
    8       4     format version (uint32, little-endian)
    12      4     bytes per token (uint32, always 2)
    16      8     number of tokens (uint64)
    24      8     reserved (zeros)

The writer puts the real token count into the header only when the shard is closed, so a shard cut
short by a crash or a copy disagrees with its file size and is refused when read.
"""

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from nashcli.errors import NashError

SHARD_MAGIC = b"NASHTOK\0"
SHARD_FORMAT_VERSION = 1
SHARD_HEADER = struct.Struct("<8sIIQ8x")
SHARD_HEADER_BYTES = SHARD_HEADER.size  # 32
TOKEN_DTYPE = np.uint16
META_FILE = "meta.json"
SPLITS = ("train", "val")


def shard_file_name(split: str, index: int) -> str:
    return f"{split}_{index:03d}.bin"


def open_shard(path: Path) -> np.ndarray:
    """Memory-map a shard's tokens (read-only) after checking its header against its size.

    NashError for a missing, foreign, newer-format or truncated file.
    """
    try:
        size_bytes = path.stat().st_size
        with open(path, "rb") as file:
            header = file.read(SHARD_HEADER_BYTES)
    except FileNotFoundError:
        raise NashError(f"token shard {path} is missing: re-run `nash prepare` with --force") from None
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
    if num_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)  # a zero-length file cannot be memory-mapped
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=SHARD_HEADER_BYTES, shape=(num_tokens,))


class ShardWriter:
    """Appends token arrays to one shard file; `close()` seals the header with the final count."""

    def __init__(self, path: Path):
        self.path = path
        self.num_tokens = 0
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


@dataclass
class ShardInfo:
    file: str
    tokens: int


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
                self._shard.close()
                self._shard = None
        self.info.tokens += len(tokens)

    def close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None


@dataclass
class DatasetMeta:
    """What meta.json records about a prepared dataset."""

    source: str
    tokenizer: str
    vocab_size: int
    eot_token: int
    max_token_id: int
    val_fraction: float
    nash_version: str
    splits: dict[str, SplitInfo]
    format_version: int = SHARD_FORMAT_VERSION
    token_dtype: str = "uint16"

    @property
    def num_tokens(self) -> int:
        return sum(split.tokens for split in self.splits.values())

    @property
    def num_documents(self) -> int:
        return sum(split.documents for split in self.splits.values())

    def write(self, folder: Path) -> None:
        (folder / META_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> "DatasetMeta":
        """Load `folder/meta.json`; NashError if it is missing or not a nash dataset description."""
        path = folder / META_FILE
        try:
            raw = json.loads(path.read_text())
            splits = {
                name: SplitInfo(
                    documents=split["documents"],
                    tokens=split["tokens"],
                    shards=[ShardInfo(**shard) for shard in split["shards"]],
                )
                for name, split in raw.pop("splits").items()
            }
            return cls(splits=splits, **raw)
        except FileNotFoundError:
            raise NashError(f"{folder} is not a prepared dataset (no {META_FILE}): run `nash prepare`") from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise NashError(
                f"{path} is not a valid nash dataset description ({error}): re-run `nash prepare` with --force"
            ) from None


def is_prepared(folder: Path) -> bool:
    """True when `folder` holds a finished dataset (meta.json is written last, then the folder renamed)."""
    return (folder / META_FILE).is_file()
