"""meta.json, the description of a prepared dataset: its splits, their shards (token counts and
sha256) and the tokenizer's ids.

Every field is checked when it is read: a damaged or hostile meta.json must not make nash open a
file outside the dataset folder or feed the model token ids it cannot embed.
"""

import json
import re
import reprlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from nashcli.data.shards import SHARD_FILE_NAME, SHARD_FORMAT_VERSION, SPLITS, TOKEN_DTYPE, ShardInfo, SplitInfo
from nashcli.data.text_files import parse_json
from nashcli.errors import NashError

META_FILE = "meta.json"


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
        """Load and check `folder/meta.json`; NashError naming the file and its first problem if it is
        missing, unreadable or not a consistent nash dataset description."""
        path = folder / META_FILE
        try:
            return _meta_from_json(_read_json(path))
        except FileNotFoundError:
            raise NashError(f"{folder} is not a prepared dataset (no {META_FILE}): run `nash prepare`") from None
        except OSError as error:
            raise NashError(f"{path} could not be read ({error.strerror or error}): check its permissions") from None
        except ValueError as error:
            raise NashError(
                f"{path} is not a valid nash dataset description ({error}): re-run `nash prepare` with --force"
            ) from None


# meta.json lists each shard in ~150 bytes: this allows hundreds of thousands of shards, and stops a
# hostile multi-gigabyte file from being read into memory.
META_MAX_BYTES = 64 << 20
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Allowed keys of each object in meta.json, and how a wrong JSON type is named in messages.
_KEYS = {cls: tuple(item.name for item in fields(cls)) for cls in (DatasetMeta, SplitInfo, ShardInfo)}
_JSON_KINDS = {int: "a whole number", float: "a number", str: "a string", list: "a list", dict: "an object"}
_REQUIRED = object()


def _read_json(path: Path) -> object:
    with open(path, "rb") as file:
        data = file.read(META_MAX_BYTES + 1)
    if len(data) > META_MAX_BYTES:
        raise ValueError(f"larger than {META_MAX_BYTES >> 20} MiB")
    return parse_json(data.decode("utf-8"))


def _meta_from_json(raw: object) -> DatasetMeta:
    """A DatasetMeta from parsed meta.json, every field checked; ValueError naming the first problem."""
    record = _json_object(raw, _KEYS[DatasetMeta], "")
    splits = _json_object(_typed(record, "splits", dict, ""), SPLITS, "splits.")
    meta = DatasetMeta(
        source=_typed(record, "source", str, ""),
        tokenizer=_typed(record, "tokenizer", str, ""),
        vocab_size=_count(record, "vocab_size", ""),
        eot_token=_count(record, "eot_token", ""),
        max_token_id=_count(record, "max_token_id", ""),
        val_fraction=_typed(record, "val_fraction", float, ""),
        nash_version=_typed(record, "nash_version", str, ""),
        splits={name: _split_from_json(split, f"splits.{name}.") for name, split in splits.items()},
        format_version=_typed(record, "format_version", int, "", default=SHARD_FORMAT_VERSION),
        token_dtype=_typed(record, "token_dtype", str, "", default=np.dtype(TOKEN_DTYPE).name),
    )
    _check_meta(meta)
    return meta


def _check_meta(meta: DatasetMeta) -> None:
    token_dtype = np.dtype(TOKEN_DTYPE).name
    if meta.format_version != SHARD_FORMAT_VERSION or meta.token_dtype != token_dtype:
        raise ValueError(
            f"format {meta.format_version} with {reprlib.repr(meta.token_dtype)} tokens; this nash reads format "
            f"{SHARD_FORMAT_VERSION} with '{token_dtype}' tokens"
        )
    for name, token_id in (("eot_token", meta.eot_token), ("max_token_id", meta.max_token_id)):
        if token_id >= meta.vocab_size:
            raise ValueError(f"{name} {token_id} is not below vocab_size {meta.vocab_size}")
    if not 0 <= meta.val_fraction < 1:
        raise ValueError(f"val_fraction {meta.val_fraction} is not in [0, 1)")
    files = [shard.file for split in meta.splits.values() for shard in split.shards]
    if len(set(files)) < len(files):
        raise ValueError("a shard file is listed twice")


def _split_from_json(raw: object, where: str) -> SplitInfo:
    record = _json_object(raw, _KEYS[SplitInfo], where)
    shards = [
        _shard_from_json(shard, f"{where}shards[{index}].")
        for index, shard in enumerate(_typed(record, "shards", list, where))
    ]
    split = SplitInfo(_count(record, "documents", where), _count(record, "tokens", where), shards)
    shard_tokens = sum(shard.tokens for shard in shards)
    if split.tokens != shard_tokens:
        raise ValueError(f"{where}tokens is {split.tokens:,} but its shards hold {shard_tokens:,}")
    return split


def _shard_from_json(raw: object, where: str) -> ShardInfo:
    record = _json_object(raw, _KEYS[ShardInfo], where)
    file = _typed(record, "file", str, where)
    # Only the names nash writes: no path may lead outside the dataset folder.
    if not SHARD_FILE_NAME.fullmatch(file):
        raise ValueError(f"{where}file {reprlib.repr(file)} is not a shard file name such as train_000.bin")
    sha256 = record.get("sha256")  # absent (or null) in datasets prepared before checksums
    if sha256 is not None and not (isinstance(sha256, str) and SHA256_HEX.fullmatch(sha256)):
        raise ValueError(f"{where}sha256 is {reprlib.repr(sha256)}, not 64 hex digits")
    return ShardInfo(file, _count(record, "tokens", where), sha256)


def _json_object(value: object, keys: tuple[str, ...], where: str) -> dict:
    """`value` if it is a JSON object whose keys are all among `keys`; ValueError otherwise."""
    name = where.rstrip(".") or "the top level"
    if not isinstance(value, dict):
        raise ValueError(f"{name} is {reprlib.repr(value)}, not an object")
    unknown = [key for key in value if key not in keys]
    if unknown:
        raise ValueError(f"{name} has an unknown key {reprlib.repr(unknown[0])}")
    return value


def _typed(record: dict, key: str, kind: type, where: str, default: object = _REQUIRED):
    """record[key] if it is a `kind` (true/false is never a number; a whole number is a float too)."""
    if key not in record:
        if default is _REQUIRED:
            raise ValueError(f"{where}{key} is missing")
        return default
    value = record[key]
    accepted = (int, float) if kind is float else kind
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ValueError(f"{where}{key} is {reprlib.repr(value)}, not {_JSON_KINDS[kind]}")
    return value


def _count(record: dict, key: str, where: str) -> int:
    value = _typed(record, key, int, where)
    if value < 0:
        raise ValueError(f"{where}{key} is {value}, a negative count")
    return value


def is_prepared(folder: Path) -> bool:
    """True when `folder` holds a finished dataset (meta.json is written last, then the folder renamed)."""
    return (folder / META_FILE).is_file()


def is_dataset_entry(name: str) -> bool:
    """Whether a file of this name is one `nash prepare` writes into a dataset folder."""
    return name == META_FILE or SHARD_FILE_NAME.fullmatch(name) is not None
