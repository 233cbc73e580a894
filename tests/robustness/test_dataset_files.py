"""Damaged and hostile dataset files: meta.json, token shards and SFT .jsonl files. Each is refused
with one NashError (one `error:` line at the CLI) naming the file and the fix, before any of it is
used, and every file stays byte-identical; a file with random bytes flipped either loads exactly the
same tokens or is refused."""

import gzip
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nashcli.checksums import sha256_file
from nashcli.cli.app import app
from nashcli.data import sft
from nashcli.data.pretrain import PretrainBatches
from nashcli.data.sft import load_sft_examples
from nashcli.data.shards import SHARD_HEADER_BYTES
from nashcli.data.tokenizer import get_tokenizer
from nashcli.errors import NashError

from .checks import flip_random_bytes, one_error_line, snapshot

runner = CliRunner()
VOCAB_SIZE = 50257
# Windows of 128 tokens: one eval batch of 256 reads all of both splits of the tiny dataset (167 and
# 18 windows) but their last < 128 tokens.
SEQ_LEN, ALL_WINDOWS = 128, 256


@pytest.fixture
def dataset(tiny_dataset, tmp_path) -> Path:
    """A copy of the tiny dataset at data/tiny, beside data/outside.bin: a valid shard that a
    meta.json naming "../outside.bin" would make nash read if it followed paths out of the folder."""
    folder = tmp_path / "data" / "tiny"
    shutil.copytree(tiny_dataset, folder)
    shutil.copy(folder / "train_000.bin", folder.parent / "outside.bin")
    return folder


def load_tokens(folder: Path) -> dict[str, torch.Tensor]:
    """Every window of both splits, read the way training reads them."""
    tokens = {}
    for split in ("train", "val"):
        batches = PretrainBatches(folder, split, seq_len=SEQ_LEN, batch_size=ALL_WINDOWS, seed=0, vocab_size=VOCAB_SIZE)
        tokens[split] = next(batches.eval_batches(1))[0]
    return tokens


def assert_refused(folder: Path, file_name: str, *message_parts: str) -> None:
    """Loading `folder` is one NashError line naming its file `file_name` and holding `message_parts`;
    nothing under the test folder changed."""
    before = snapshot(folder.parent.parent)
    with pytest.raises(NashError) as error:
        load_tokens(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder / file_name) in message and "nash prepare" in message, message
    for part in message_parts:
        assert part in message, message
    assert snapshot(folder.parent.parent) == before


def replace(old: str, new: str) -> Callable[[str], str]:
    def damage(text: str) -> str:
        assert old in text
        return text.replace(old, new)

    return damage


def edit_json(edit: Callable[[dict], None]) -> Callable[[str], str]:
    def damage(text: str) -> str:
        meta = json.loads(text)
        edit(meta)
        return json.dumps(meta)

    return damage


def damage_meta(dataset: Path, damage: Callable[[str], str | bytes]) -> None:
    damaged = damage((dataset / "meta.json").read_text())
    (dataset / "meta.json").write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())


def train_shard(meta: dict) -> dict:
    return meta["splits"]["train"]["shards"][0]


META_CASES = {
    "text-for-a-number": (replace('"vocab_size": 50257', '"vocab_size": "50257"'), "vocab_size is '50257', not a whole number"),
    "true-for-a-count": (replace('"documents": 54', '"documents": true'), "splits.val.documents is True, not a whole number"),
    "float-for-a-count": (replace('"max_token_id": 50256', '"max_token_id": 50256.0'), "max_token_id is 50256.0, not a"),
    "negative-count": (replace('"documents": 603', '"documents": -603'), "splits.train.documents is -603, a negative count"),
    "huge-number": (replace('"vocab_size": 50257', '"vocab_size": ' + "9" * 5000), "a number too long to read"),
    "missing-key": (edit_json(lambda meta: meta.pop("eot_token")), "eot_token is missing"),
    "unknown-key": (edit_json(lambda meta: meta.update(command="rm -rf ~")), "the top level has an unknown key 'command'"),
    "unknown-split": (edit_json(lambda meta: meta["splits"].update(test={})), "splits has an unknown key 'test'"),
    "list-at-the-top": (lambda text: "[]", "the top level is [], not an object"),
    "shards-not-a-list": (
        edit_json(lambda meta: meta["splits"]["train"].update(shards=train_shard(meta))), "splits.train.shards is {"
    ),
    "parent-path": (replace('"train_000.bin"', '"../outside.bin"'), "shards[0].file '../outside.bin' is not a shard file"),
    "absolute-path": (replace('"val_000.bin"', '"/etc/passwd"'), "splits.val.shards[0].file '/etc/passwd' is not"),
    "nested-path": (replace('"train_000.bin"', '"tiny/train_000.bin"'), "file 'tiny/train_000.bin' is not a shard"),
    "shard-listed-twice": (edit_json(lambda meta: meta["splits"].update(val=meta["splits"]["train"])), "listed twice"),
    "split-tokens-not-the-sum": (
        edit_json(lambda meta: meta["splits"]["val"].update(tokens=2409)), "splits.val.tokens is 2,409 but its shards hold 2,408"
    ),
    "max-token-id-outside-vocab": (
        replace('"max_token_id": 50256', '"max_token_id": 50257'), "max_token_id 50257 is not below vocab_size 50257"
    ),
    "eot-outside-vocab": (replace('"eot_token": 50256', '"eot_token": 70000'), "eot_token 70000 is not below vocab_size"),
    "newer-format": (replace('"format_version": 1', '"format_version": 2'), "this nash reads format 1 with 'uint16'"),
    "other-token-type": (replace('"token_dtype": "uint16"', '"token_dtype": "uint32"'), "format 1 with 'uint32' tokens"),
    "sha256-not-hex": (edit_json(lambda meta: train_shard(meta).update(sha256="z" * 64)), "sha256 is 'zzzz"),
    "nan-val-fraction": (replace('"val_fraction": 0.1', '"val_fraction": NaN'), "val_fraction nan is not in [0, 1)"),
    "cut-short": (lambda text: text[: len(text) // 2], "at character"),
    "nested-deep": (lambda text: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "not-utf8": (lambda text: text.encode().replace(b"one play", b"one \xff play"), "can't decode byte 0xff"),
}


@pytest.mark.parametrize("case", META_CASES)
def test_a_damaged_or_hostile_meta_json_is_one_line_naming_it(dataset, case):
    damage, message = META_CASES[case]
    damage_meta(dataset, damage)
    assert_refused(dataset, "meta.json", "is not a valid nash dataset description", message, "--force")


def test_an_oversized_meta_json_is_refused_without_reading_it_whole(dataset, monkeypatch):
    monkeypatch.setattr("nashcli.data.dataset_meta.META_MAX_BYTES", 1024)
    (dataset / "meta.json").write_text((dataset / "meta.json").read_text() + " " * 1024)
    assert_refused(dataset, "meta.json", "larger than")


def drop_checksums(meta: dict) -> None:
    """meta.json as nash wrote it before checksums."""
    for split in meta["splits"].values():
        for shard in split["shards"]:
            del shard["sha256"]


def test_older_datasets_without_checksums_load_the_same_tokens(dataset):
    expected = load_tokens(dataset)
    damage_meta(dataset, edit_json(drop_checksums))
    loaded = load_tokens(dataset)
    assert all(torch.equal(loaded[split], expected[split]) for split in expected)


def rewrite_shard(dataset: Path, change: Callable[[np.ndarray], None]) -> None:
    """Apply `change` to the train shard's tokens and record the new sha256, as a hostile dataset would."""
    path = dataset / "train_000.bin"
    data = bytearray(path.read_bytes())
    change(np.frombuffer(data, dtype=np.uint16, offset=SHARD_HEADER_BYTES))
    path.write_bytes(bytes(data))
    damage_meta(dataset, edit_json(lambda meta: train_shard(meta).update(sha256=sha256_file(path))))


def flip_one_byte(dataset: Path) -> None:
    data = bytearray((dataset / "train_000.bin").read_bytes())
    data[1000] ^= 0x01
    (dataset / "train_000.bin").write_bytes(bytes(data))


def cut_short(dataset: Path) -> None:
    (dataset / "train_000.bin").write_bytes((dataset / "train_000.bin").read_bytes()[:-100])


def token_ids_outside_vocab(dataset: Path) -> None:
    def every_seventh_is_60000(tokens: np.ndarray) -> None:
        tokens[::7] = 60000

    rewrite_shard(dataset, every_seventh_is_60000)


SHARD_CASES = {
    "flipped-byte": (flip_one_byte, "is damaged (its sha256 differs"),
    "truncated": (cut_short, "is truncated or damaged"),
    "token-ids-outside-vocab": (token_ids_outside_vocab, "holds token id 60000, above max_token_id 50256"),
    "lying-max-token-id": (
        lambda dataset: damage_meta(dataset, replace('"max_token_id": 50256', '"max_token_id": 1000')), "above max_token_id 1000"
    ),
}


@pytest.mark.parametrize("case", SHARD_CASES)
def test_a_damaged_or_hostile_shard_is_one_line_naming_it(dataset, case):
    damage, message = SHARD_CASES[case]
    damage(dataset)
    assert_refused(dataset, "train_000.bin", message)


@pytest.mark.parametrize("case", ["flipped-byte", "token-ids-outside-vocab"])
def test_nash_train_on_a_damaged_shard_is_one_error_line_and_changes_nothing(dataset, tiny_model_settings, case):
    damage, message = SHARD_CASES[case]
    damage(dataset)
    before = snapshot(dataset)
    settings = tiny_model_settings + [f"data.dataset={dataset}", "train.max_steps=2", "train.warmup_steps=1"]
    result = runner.invoke(app, ["train", "--run", "damaged", "--quiet", *(arg for s in settings for arg in ("--set", s))])
    line = one_error_line(result)
    assert "train_000.bin" in line and message in line
    assert snapshot(dataset) == before


# SFT files: written by the user, so nothing records what they held; a bad line must still be one
# NashError naming the file and the line.

SFT_LINES = [
    {"prompt": "Q: capital of France?\nA:", "completion": " Paris."},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
    {"prompt": "2 + 2 =", "completion": " 4"},
]
SFT_TEXT = "".join(json.dumps(line) + "\n" for line in SFT_LINES).encode()


def with_second_line(line: bytes) -> bytes:
    lines = SFT_TEXT.splitlines(keepends=True)
    return b"".join([lines[0], line + b"\n", *lines[1:]])


def gzip_with_bad_crc() -> bytes:
    data = bytearray(gzip.compress(SFT_TEXT))
    data[-8] ^= 0xFF  # the CRC32 of the trailer
    return bytes(data)


SFT_CASES = {
    "not-utf8": ("sft.jsonl", with_second_line(b'{"prompt": "caf\xe9", "completion": "x"}'), "line 2 is not UTF-8 text"),
    "too-long": ("sft.jsonl", with_second_line(b'["' + b"a" * 300_000 + b'"]'), "line 2 is longer than 250,000"),
    "not-json": ("sft.jsonl", with_second_line(b'{"prompt": "x", '), "line 2: not valid JSON"),
    "number-for-text": ("sft.jsonl", with_second_line(b'{"prompt": 1, "completion": "x"}'), 'line 2: expected {"prompt": text'),
    "text-for-messages": ("sft.jsonl", with_second_line(b'{"messages": "hello"}'), "line 2: 'messages' must be a non-empty list"),
    "nested-deep": ("sft.jsonl", with_second_line(b"[" * 100_000 + b"]" * 100_000), "line 2: not valid JSON (nested too deeply)"),
    "huge-number": ("sft.jsonl", with_second_line(b"9" * 5000), "line 2: not valid JSON (a number too long to read)"),
    "truncated-gzip": ("sft.jsonl.gz", gzip.compress(SFT_TEXT)[:-20], "could not be read (Compressed file ended"),
    "gzip-bad-crc": ("sft.jsonl.gz", gzip_with_bad_crc(), "could not be read (CRC check failed"),
    "not-gzip": ("sft.jsonl.gz", SFT_TEXT, "line 1: the file could not be read (Not a gzipped file"),
}


@pytest.mark.parametrize("case", SFT_CASES)
def test_a_bad_sft_file_is_one_line_naming_the_file_and_line(tmp_path, monkeypatch, case):
    name, data, message = SFT_CASES[case]
    monkeypatch.setattr(sft, "SFT_LINE_MAX_BYTES", 250_000)  # above the nested-deep line
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(NashError) as error:
        load_sft_examples(path, get_tokenizer(), max_seq_len=32)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(path))
    assert message in str(error.value)
    assert path.read_bytes() == data


# The fuzz tests: bytes flipped at random (fixed seeds) in each kind of dataset file.

FUZZ_CASES_PER_FILE = 40


def fuzz(path: Path, load: Callable[[], object], same: Callable[[object], bool]) -> dict[str, int]:
    """Flip bytes of `path` once per seed and `load`: either `same(loaded)` or a one-line NashError."""
    original = path.read_bytes()
    outcomes = {"loaded": 0, "refused": 0}
    for seed in range(FUZZ_CASES_PER_FILE):
        path.write_bytes(flip_random_bytes(original, seed))
        started = time.perf_counter()
        try:
            loaded = load()
        except NashError as error:
            assert "\n" not in str(error), (path.name, seed)
            outcomes["refused"] += 1
        else:
            assert same(loaded), f"seed {seed}: {path.name} loaded with other tokens"
            outcomes["loaded"] += 1
        assert time.perf_counter() - started < 5, (path.name, seed)
    path.write_bytes(original)
    return outcomes


def same_tokens(expected: dict[str, torch.Tensor]) -> Callable[[object], bool]:
    return lambda loaded: all(torch.equal(loaded[split], expected[split]) for split in expected)


def within_vocab(loaded: dict[str, torch.Tensor]) -> bool:
    return all(int(tokens.max()) < VOCAB_SIZE for tokens in loaded.values())


def test_a_shard_with_flipped_bytes_is_always_refused(dataset):
    outcomes = fuzz(dataset / "train_000.bin", lambda: load_tokens(dataset), same_tokens(load_tokens(dataset)))
    assert outcomes["loaded"] == 0  # the sha256 catches every change


def test_without_checksums_a_shard_with_flipped_bytes_is_refused_or_loads_never_crashes(dataset):
    # A dataset of an older nash: a changed token id up to max_token_id goes unseen, but the header
    # checks and the per-batch bound let no other id and nothing but a NashError come out.
    damage_meta(dataset, edit_json(drop_checksums))
    outcomes = fuzz(dataset / "train_000.bin", lambda: load_tokens(dataset), within_vocab)
    assert outcomes["refused"] > 0


def test_a_meta_json_with_flipped_bytes_loads_the_same_tokens_or_is_refused(dataset):
    # Descriptive fields (source, documents, ...) may change unseen; what is read may not.
    outcomes = fuzz(dataset / "meta.json", lambda: load_tokens(dataset), same_tokens(load_tokens(dataset)))
    assert outcomes["refused"] > 0


@pytest.mark.parametrize("name", ["sft.jsonl", "sft.jsonl.gz"])
def test_an_sft_file_with_flipped_bytes_loads_or_is_refused_never_crashes(tmp_path, name):
    # Nothing records what a user's SFT file held, so a changed letter loads unseen; the rest of a
    # damaged file must be a NashError.
    path = tmp_path / name
    path.write_bytes(gzip.compress(SFT_TEXT) if name.endswith(".gz") else SFT_TEXT)
    outcomes = fuzz(path, lambda: load_sft_examples(path, get_tokenizer(), max_seq_len=32), lambda loaded: True)
    assert outcomes["refused"] > 0
