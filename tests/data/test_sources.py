import gzip
import logging
import re
import socket
import time
from unittest import mock

import pytest

from nashcli.data import datasets_stream, sources, text_files
from nashcli.data.sources import REGISTRY, DatasetsStream, RegistryEntry, resolve_source
from nashcli.data.text_files import read_blank_line_documents, read_jsonl_documents, read_text_document
from nashcli.errors import NashError

from .corpora import DOCUMENTS, write_jsonl, write_parquet_dataset


def documents_of(pieces) -> list[str]:
    """Join pieces back into whole documents."""
    documents, current = [], []
    for text, ends in pieces:
        current.append(text)
        if ends:
            documents.append("".join(current))
            current = []
    assert current == []
    return documents


def test_registry_names_carry_their_token_budget():
    units = {"M": 10**6, "B": 10**9}
    for name, entry in REGISTRY.items():
        match = re.search(r"_(\d+)([MB])$", name)
        if match:
            assert entry.tokens == int(match.group(1)) * units[match.group(2)], name
            assert entry.hub_id and resolve_source(name).token_budget == entry.tokens
    assert REGISTRY["shakespeare"].hub_id is None
    assert resolve_source("shakespeare").token_budget is None


def test_registry_names_say_what_they_read():
    # fineweb_1B once read fineweb-edu: a name is the dataset's own name plus the token budget.
    for name, entry in REGISTRY.items():
        if entry.hub_id is not None:
            assert name.rsplit("_", 1)[0] == entry.hub_id.split("/")[-1].lower(), name
    assert REGISTRY["fineweb_1B"].hub_id == "HuggingFaceFW/fineweb"


def test_builtin_corpus_is_42_plays():
    assert len(documents_of(resolve_source("shakespeare").pieces())) == 42


def test_text_file_is_one_document_read_in_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(text_files, "PIECE_CHARS", 10)
    path = tmp_path / "notes.txt"
    path.write_text("line one\n\nline two is longer\n", encoding="utf-8")
    pieces = list(read_text_document(path))
    assert len(pieces) > 3
    assert documents_of(pieces) == ["line one\n\nline two is longer\n"]


def test_blank_lines_split_documents(tmp_path, monkeypatch):
    monkeypatch.setattr(text_files, "PIECE_CHARS", 12)
    path = tmp_path / "notes.txt"
    path.write_text("\n\nfirst para\nstill first\n\n\n\nsecond\n  \nthird one is long enough to be cut\n", encoding="utf-8")
    assert documents_of(read_blank_line_documents(path)) == [
        "first para\nstill first",
        "second",
        "third one is long enough to be cut",
    ]


def test_jsonl_and_gzipped_jsonl_give_the_same_documents(tmp_path):
    plain = write_jsonl(tmp_path / "a.jsonl", DOCUMENTS)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as file:
        file.write(plain.read_text(encoding="utf-8"))
    assert documents_of(read_jsonl_documents(plain, "text")) == DOCUMENTS
    assert documents_of(resolve_source(str(tmp_path / "a.jsonl.gz")).pieces()) == DOCUMENTS


def test_folder_reads_every_supported_file_in_sorted_order(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "b.txt").write_text("bee", encoding="utf-8")
    write_jsonl(tmp_path / "corpus" / "a.jsonl", ["ay", "aye"])
    (tmp_path / "corpus" / "skip.csv").write_text("x,y", encoding="utf-8")
    source = resolve_source(str(tmp_path / "corpus"))
    assert source.name == "corpus"
    assert documents_of(source.pieces()) == ["ay", "aye", "bee"]


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "oops",\n', encoding="utf-8")
    with pytest.raises(NashError, match=r"bad.jsonl line 3: not valid JSON"):
        list(read_jsonl_documents(path, "text"))


def test_missing_text_field_suggests_text_field_option(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", ["hello"], field="body")
    with pytest.raises(NashError, match=r"c.jsonl line 1: no 'text' field \(found: body\): pass --text-field NAME"):
        list(resolve_source(str(path)).pieces())
    assert documents_of(resolve_source(str(path), text_field="body").pieces()) == ["hello"]


def test_unknown_source_and_unsupported_file_are_one_line_errors(tmp_path):
    with pytest.raises(NashError, match=r"unknown source 'nope': not a registry name \(shakespeare, "):
        resolve_source("nope")
    (tmp_path / "data.csv").write_text("a,b", encoding="utf-8")
    with pytest.raises(NashError, match="data.csv: unsupported file type"):
        resolve_source(str(tmp_path / "data.csv"))
    with pytest.raises(NashError, match="is not a hub dataset id"):
        resolve_source("hf:bad id!")


def test_datasets_stream_reads_local_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_jsonl(tmp_path / "d.jsonl", DOCUMENTS)
    pq.write_table(pa.table({"text": DOCUMENTS, "id": list(range(len(DOCUMENTS)))}), tmp_path / "d.parquet")
    for builder, path in [("json", jsonl), ("parquet", tmp_path / "d.parquet")]:
        stream = DatasetsStream(path=builder, data_files=[str(path)], name="d", description=path.name, batch_size=4)
        assert documents_of(stream.pieces()) == DOCUMENTS
    assert documents_of(resolve_source(str(tmp_path / "d.parquet")).pieces()) == DOCUMENTS


def test_datasets_stream_without_the_field_names_the_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["x"], field="content")
    stream = DatasetsStream(path="json", data_files=[str(path)], name="d", description="d.jsonl")
    with pytest.raises(NashError, match=r"d.jsonl has no field 'text' \(fields: content\): pass --text-field NAME"):
        list(stream.pieces())


@pytest.fixture
def hub_answers(monkeypatch):
    """The hub probe succeeds, so a mocked `load_dataset` decides what happens next."""
    monkeypatch.setattr(datasets_stream, "hub_unreachable_reason", lambda: None)


@pytest.fixture
def stories(tmp_path):
    """A dataset folder as downloaded from the hub: train and validation splits in parquet files."""
    return write_parquet_dataset(tmp_path / "stories", {"train": DOCUMENTS, "validation": ["a held-out story", "and another"]})


def test_registry_entry_streams_a_local_dataset_folder_without_the_hub(stories, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a folder must not need the hub, nor its probe
    source = RegistryEntry("stories_1k", str(stories), None, 1000).source()
    assert source.token_budget == 1000
    assert documents_of(source.pieces()) == DOCUMENTS


def test_hf_folder_is_read_locally_with_its_splits(stories, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    absolute = resolve_source(f"hf:{stories}")  # the leading slash stays: a path, not a hub id
    assert absolute.name == "stories" and absolute.description == f"hf:{stories} (split train)"
    assert documents_of(absolute.pieces()) == DOCUMENTS
    monkeypatch.chdir(stories.parent)
    relative = resolve_source("hf:./stories/", split="validation")
    assert documents_of(relative.pieces()) == ["a held-out story", "and another"]
    with pytest.raises(NashError, match=r"could not read hf:.*stories \(split test\) \(ValueError: .*--split"):
        list(resolve_source("hf:./stories", split="test").pieces())


def test_hf_path_that_is_not_a_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(NashError, match=r"'hf:/no/such/folder': /no/such/folder is not a folder: hf: takes"):
        resolve_source("hf:/no/such/folder")
    write_jsonl(tmp_path / "d.jsonl", DOCUMENTS)
    with pytest.raises(NashError, match=r"a single file needs no hf: \(nash prepare FILE\)"):
        resolve_source("hf:./d.jsonl")


def test_offline_setting_fails_at_once_naming_the_fix(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(NashError) as raised:
        next(resolve_source("fineweb-edu_1B").pieces())
    assert time.perf_counter() - started < 2
    assert str(raised.value) == (
        "the Hugging Face hub is unreachable (HF_DATASETS_OFFLINE is set), so hf:HuggingFaceFW/fineweb-edu "
        "(sample-10BT) cannot be streamed: connect to the network, or download the dataset where there is one and "
        "pass its folder: nash prepare hf:FOLDER --subset sample-10BT --max-tokens 1000000000"
    )


def test_silent_hub_fails_within_the_probe_timeout(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets_stream, "HUB_PROBE_TIMEOUT_S", 0.5)
    with socket.socket() as server:  # accepts connections (the kernel's backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        started = time.perf_counter()
        with pytest.raises(NashError, match=r"hub is unreachable \(http://127.0.0.1:\d+ did not answer: \w*Timeout"):
            next(resolve_source("hf:someone/stories").pieces())
        assert time.perf_counter() - started < 2


def test_reading_a_dataset_silences_library_warnings_only_meanwhile(stories):
    import datasets  # sets the library's own level when first imported

    loggers = [logging.getLogger(name) for name in ("datasets", "huggingface_hub")]
    levels_before = [logger.level for logger in loggers]
    levels_while_opening = []

    def load_and_record(*args, **kwargs):
        levels_while_opening.extend(logger.getEffectiveLevel() for logger in loggers)
        return load_dataset(*args, **kwargs)

    load_dataset = datasets.load_dataset
    with mock.patch("datasets.load_dataset", side_effect=load_and_record):
        assert documents_of(resolve_source(f"hf:{stories}").pieces()) == DOCUMENTS
    assert levels_while_opening == [logging.ERROR, logging.ERROR]
    assert [logger.level for logger in loggers] == levels_before


def test_unreachable_hub_is_a_one_line_error(hub_answers):
    source = resolve_source("tinystories_10M")
    with mock.patch("datasets.load_dataset", side_effect=ConnectionError("Couldn't reach 'roneneldan/TinyStories' on the Hub\nmore")):
        with pytest.raises(NashError) as raised:
            next(source.pieces())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("could not reach the Hugging Face hub dataset hf:roneneldan/TinyStories while opening it")
    assert "ConnectionError: Couldn't reach 'roneneldan/TinyStories' on the Hub)" in message


def test_hub_failure_while_streaming_is_a_one_line_error(hub_answers):
    def batches():
        yield {"text": ["one story"]}
        raise OSError("connection reset by peer")

    dataset = mock.Mock()
    dataset.iter.return_value = batches()
    with mock.patch("datasets.load_dataset", return_value=dataset) as load:
        pieces = resolve_source("hf:someone/stories", split="validation", subset="en").pieces()
        assert next(pieces) == ("one story", True)
        with pytest.raises(NashError, match=r"while reading it \(OSError: connection reset by peer\)"):
            next(pieces)
    load.assert_called_once_with("someone/stories", name="en", split="validation", data_files=None, streaming=True)
