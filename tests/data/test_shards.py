import hashlib

import numpy as np
import pytest

from nashcli.data.dataset_meta import DatasetMeta
from nashcli.data.shards import SHARD_HEADER_BYTES, ShardInfo, SplitInfo, SplitWriter, open_shard
from nashcli.errors import NashError


def test_split_writer_rolls_shards_and_reads_back_the_same_tokens(tmp_path):
    tokens = np.arange(2500, dtype=np.uint16)
    writer = SplitWriter(tmp_path, "train", shard_tokens=1000)
    writer.write(tokens[:700])
    writer.write(tokens[700:])
    writer.close()
    assert [(shard.file, shard.tokens) for shard in writer.info.shards] == [
        ("train_000.bin", 1000),
        ("train_001.bin", 1000),
        ("train_002.bin", 500),
    ]
    read = np.concatenate([open_shard(tmp_path / shard.file) for shard in writer.info.shards])
    np.testing.assert_array_equal(read, tokens)
    assert (tmp_path / "train_000.bin").stat().st_size == SHARD_HEADER_BYTES + 2000


def test_split_writer_records_the_sha256_of_each_closed_shard(tmp_path):
    writer = SplitWriter(tmp_path, "train", shard_tokens=1000)
    writer.write(np.arange(1500, dtype=np.uint16))
    writer.close()
    files = [tmp_path / shard.file for shard in writer.info.shards]
    assert [shard.sha256 for shard in writer.info.shards] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def test_open_shard_checks_the_token_count_and_sha256_listed_in_meta(tmp_path):
    writer = SplitWriter(tmp_path, "val", shard_tokens=100)
    writer.write(np.arange(50, dtype=np.uint16))
    writer.close()
    listed, path = writer.info.shards[0], tmp_path / "val_000.bin"
    np.testing.assert_array_equal(open_shard(path, listed), np.arange(50))
    with pytest.raises(NashError, match="val_000.bin holds 50 tokens but meta.json lists 49, so the dataset is damaged"):
        open_shard(path, ShardInfo(listed.file, 49, listed.sha256))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the high byte of the last token: 49 becomes 305
    path.write_bytes(bytes(data))
    with pytest.raises(NashError, match=r"val_000.bin is damaged \(its sha256 differs .*\): re-run `nash prepare` with --force"):
        open_shard(path, listed)
    assert open_shard(path, ShardInfo(listed.file, 50))[-1] == 305  # no sha256 recorded (an older nash): read as is


def test_truncated_shard_is_refused(tmp_path):
    writer = SplitWriter(tmp_path, "val", shard_tokens=100)
    writer.write(np.arange(50, dtype=np.uint16))
    writer.close()
    path = tmp_path / "val_000.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(NashError, match=r"val_000.bin is truncated or damaged: its header says 50 tokens, the file holds 49"):
        open_shard(path)


def test_shard_never_closed_is_refused(tmp_path):
    # The header holds a zero count until close(): a writer killed mid-way leaves an invalid file.
    writer = SplitWriter(tmp_path, "train", shard_tokens=100)
    writer.write(np.arange(10, dtype=np.uint16))
    writer._shard._file.flush()
    with pytest.raises(NashError, match="header says 0 tokens"):
        open_shard(tmp_path / "train_000.bin")


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "train_000.bin"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(NashError, match="is not a nash token shard"):
        open_shard(path)


def test_meta_round_trip(tmp_path):
    meta = DatasetMeta(
        source="corpus.jsonl", tokenizer="gpt2", vocab_size=50257, eot_token=50256, max_token_id=50256,
        val_fraction=0.005, nash_version="0.1.0",
        splits={"train": SplitInfo(3, 30, [ShardInfo("train_000.bin", 30, "ab" * 32)]), "val": SplitInfo(1, 5, [ShardInfo("val_000.bin", 5)])},
    )
    meta.write(tmp_path)
    assert DatasetMeta.read(tmp_path) == meta
    assert (meta.num_tokens, meta.num_documents) == (35, 4)


def test_missing_or_broken_meta_is_a_one_line_error(tmp_path):
    with pytest.raises(NashError, match="is not a prepared dataset"):
        DatasetMeta.read(tmp_path)
    (tmp_path / "meta.json").write_text('{"source": 1}')
    with pytest.raises(NashError, match="not a valid nash dataset description"):
        DatasetMeta.read(tmp_path)
