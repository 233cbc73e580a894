import json
import subprocess
import sys

import pytest
from .corpora import DOCUMENTS, split_documents, split_tokens, write_jsonl

from nashcli.data.prepare import VAL_MIN_TOKENS, ValSplitter, default_out_dir, prepare_dataset
from nashcli.data.dataset_meta import DatasetMeta, is_prepared
from nashcli.data.sources import SHAKESPEARE_TOKENS, LocalFiles, resolve_source
from nashcli.data.tokenizer import get_tokenizer
from nashcli.errors import NashError


def test_round_trip_text_to_shards_equals_tiktoken_tokens_of_whole_documents(corpus_jsonl, tmp_path):
    tokenizer = get_tokenizer()
    result = prepare_dataset(resolve_source(str(corpus_jsonl)), tmp_path / "out", val_fraction=0.2, shard_tokens=16)
    meta = DatasetMeta.read(tmp_path / "out")
    expected = [tokenizer.encode(text) for text in DOCUMENTS]
    train = split_documents(split_tokens(tmp_path / "out", "train"))
    val = split_documents(split_tokens(tmp_path / "out", "val"))
    # Whole documents: each split holds complete documents, in source order, together all of them.
    assert sorted(train + val) == sorted(expected)
    assert train == [doc for doc in expected if doc in train] and val == [doc for doc in expected if doc in val]
    assert len(val) >= 1 and len(train) >= 1
    assert meta.splits["train"].documents == len(train) and meta.splits["val"].documents == len(val)
    assert meta.num_tokens == sum(len(doc) + 1 for doc in expected) == result.meta.num_tokens
    assert len(meta.splits["train"].shards) > 2  # 16-token shards: documents continue across shards
    assert meta.max_token_id == 50256 and meta.tokenizer == "gpt2" and meta.source == str(corpus_jsonl)


def test_builtin_corpus_gets_a_usable_val_split(tmp_path):
    meta = prepare_dataset(resolve_source("shakespeare"), default_out_dir(resolve_source("shakespeare"), tmp_path)).meta
    assert meta.num_tokens == SHAKESPEARE_TOKENS and meta.num_documents == 42
    assert meta.splits["val"].documents >= 2
    assert VAL_MIN_TOKENS <= meta.splits["val"].tokens <= 0.1 * meta.num_tokens
    assert is_prepared(tmp_path / "shakespeare")


def test_val_share_follows_the_fraction_on_large_corpora():
    splitter = ValSplitter(0.01)
    val = seen = 0
    for _ in range(100_000):  # 100M tokens of 1000-token documents
        if splitter.split_for_next_document(val, seen) == "val":
            val += 1000
        seen += 1000
    assert val / seen == pytest.approx(0.01, rel=0.02)
    assert ValSplitter(0.0).split_for_next_document(0, 0) == "train"


def test_token_budget_stops_after_the_document_that_reaches_it(corpus_jsonl, tmp_path):
    meta = prepare_dataset(resolve_source(str(corpus_jsonl)), tmp_path / "out", max_tokens=30).meta
    lengths = [len(ids) + 1 for ids in get_tokenizer().encode_batch(DOCUMENTS)]
    documents = next(n for n in range(1, 7) if sum(lengths[:n]) >= 30)
    assert meta.num_documents == documents and meta.num_tokens == sum(lengths[:documents])


def test_interrupted_prepare_leaves_nothing_that_looks_finished(tmp_path):
    def pieces():
        yield "a document", True
        yield "another one", True
        raise KeyboardInterrupt

    source = LocalFiles([], name="x", description="x")
    source.pieces = pieces
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(source, tmp_path / "data" / "x")
    assert list((tmp_path / "data").iterdir()) == []


def test_existing_dataset_needs_force_and_force_rebuilds(corpus_jsonl, tmp_path):
    out = tmp_path / "out"
    prepare_dataset(resolve_source(str(corpus_jsonl)), out, val_fraction=0.2)
    with pytest.raises(NashError, match="is already prepared: pass --force"):
        prepare_dataset(resolve_source(str(corpus_jsonl)), out)
    write_jsonl(corpus_jsonl, DOCUMENTS[:3])
    meta = prepare_dataset(resolve_source(str(corpus_jsonl)), out, force=True, val_fraction=0.2).meta
    assert meta.num_documents == 3 and DatasetMeta.read(out).num_documents == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.jsonl", "out"]


def test_single_document_explains_the_whole_document_val_split(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("One paragraph.\n\nAnother paragraph.\n", encoding="utf-8")
    with pytest.raises(NashError, match=r"holds only 1 document\(s\), all taken by the val split .*--split-blank-lines"):
        prepare_dataset(resolve_source(str(path)), tmp_path / "book")
    meta = prepare_dataset(resolve_source(str(path), split_blank_lines=True), tmp_path / "book").meta
    assert meta.splits["train"].documents == 1 and meta.splits["val"].documents == 1
    assert not (tmp_path / ".book.partial").exists()


def test_empty_source_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", ["", ""])
    with pytest.raises(NashError, match="empty.jsonl holds no text"):
        prepare_dataset(resolve_source(str(path)), tmp_path / "out")


def test_progress_reports_growing_counts(corpus_jsonl, tmp_path):
    calls = []
    prepare_dataset(resolve_source(str(corpus_jsonl)), tmp_path / "out", on_progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (6, DatasetMeta.read(tmp_path / "out").num_tokens)
    assert calls == sorted(calls)


MEMORY_SCRIPT = """
import json, resource, sys
from pathlib import Path
from nashcli.data.prepare import prepare_dataset
from nashcli.data.sources import resolve_source


def peak_mb():
    # VmHWM: ru_maxrss would include the parent's peak, which Linux carries over fork and exec.
    try:
        with open("/proc/self/status") as status:
            return int(status.read().split("VmHWM:")[1].split()[0]) / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)


corpus, out = Path(sys.argv[1]), Path(sys.argv[2])
# Two 12 MB single-document .txt files: the big-document path, read in pieces.
line = "Now is the winter of our discontent made glorious summer by this sun of York; " * 8 + "\\n"
corpus.mkdir()
for name in ("a.txt", "b.txt"):
    with open(corpus / name, "w") as file:
        for _ in range(12_000_000 // len(line)):
            file.write(line)
before_mb = peak_mb()
meta = prepare_dataset(resolve_source(str(corpus)), out, shard_tokens=1_000_000).meta
print(json.dumps({"tokens": meta.num_tokens, "shards": len(meta.splits["train"].shards), "before_mb": before_mb, "after_mb": peak_mb()}))
"""


def test_memory_stays_bounded_on_a_corpus_many_shards_large(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "corpus"), str(tmp_path / "out")],
        capture_output=True, text=True, check=True,
    )
    report = json.loads(completed.stdout)
    assert report["tokens"] > 4_000_000 and report["shards"] >= 2, report
    # A list of all token ids alone would take ~36 bytes x 5M = 180 MB; streaming adds a few tens of MB
    # (mostly the tokenizer's tables).
    assert report["after_mb"] - report["before_mb"] < 120, report
    assert report["after_mb"] < 300, report
