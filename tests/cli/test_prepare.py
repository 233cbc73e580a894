import inspect
import json
import time
from pathlib import Path
from unittest import mock

from typer.testing import CliRunner

from nashcli.cli import prepare
from nashcli.cli.app import app
from nashcli.data.prepare import DEFAULT_SHARD_TOKENS, DEFAULT_VAL_FRACTION
from nashcli.data.dataset_meta import DatasetMeta
from nashcli.data import datasets_stream
from nashcli.data.sources import REGISTRY

from tests.data.corpora import DOCUMENTS, write_parquet_dataset

runner = CliRunner()


def test_prepare_shakespeare_writes_data_shakespeare_and_a_table():
    result = runner.invoke(app, ["prepare", "shakespeare", "--quiet"])
    assert result.exit_code == 0, result.output
    meta = DatasetMeta.read(Path("data/shakespeare"))
    assert meta.num_documents == 42
    assert "data/shakespeare" in result.output and "train" in result.output and "val" in result.output
    assert f"{meta.splits['train'].tokens:,}" in result.output
    again = runner.invoke(app, ["prepare", "shakespeare"])
    assert again.exit_code == 0
    assert "data/shakespeare is already prepared" in again.output and "--force" in again.output


def test_prepare_local_file_with_out_and_options(tmp_path):
    corpus = tmp_path / "notes.jsonl"
    corpus.write_text("".join(json.dumps({"body": f"note number {i} " * 20}) + "\n" for i in range(30)))
    result = runner.invoke(
        app, ["prepare", str(corpus), "--out", "custom", "--text-field", "body", "--val-fraction", "0.1", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    meta = DatasetMeta.read(tmp_path / "custom")
    assert meta.num_documents == 30 and meta.splits["val"].documents >= 1
    assert "--set data.dataset=custom" in result.output


def table_rows(output: str) -> list[list[str]]:
    """The cells of each body line of a rich table (a wrapped cell's continuation lines start with "")."""
    return [[cell.strip() for cell in line.strip("│ ").split("│")] for line in output.splitlines() if "│" in line]


def test_list_shows_every_registry_entry_with_its_source():
    result = runner.invoke(app, ["prepare", "--list"], terminal_width=300)
    assert result.exit_code == 0, result.output
    rows = {row[0]: row for row in table_rows(result.output)}
    assert len(REGISTRY) >= 2
    for name, entry in REGISTRY.items():
        assert name in rows, f"{name} missing from nash prepare --list"
        source_cell = rows[name][1]  # a long label wraps: its first line
        assert source_cell and entry.source_label.startswith(source_cell), (name, source_cell)
    # The disk column: two bytes a token, e.g. 20.0 GB for ten billion tokens.
    largest = max(REGISTRY.values(), key=lambda entry: entry.tokens)
    assert largest.tokens >= 10**9 and rows[largest.name][3] == f"{largest.tokens * 2 / 1e9:.1f} GB"


def test_unknown_source_is_one_error_line():
    result = runner.invoke(app, ["prepare", "nope"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: unknown source 'nope': not a registry name ({', '.join(REGISTRY)}), not hf:USER/NAME, "
        "and no such file or folder"
    ]


def test_prepare_hf_folder_reads_the_downloaded_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = write_parquet_dataset(tmp_path / "downloads" / "stories", {"train": DOCUMENTS * 5})
    result = runner.invoke(app, ["prepare", f"hf:{folder}", "--val-fraction", "0.2", "--quiet"])
    assert result.exit_code == 0, result.output
    meta = DatasetMeta.read(tmp_path / "data" / "stories")
    assert meta.num_documents == len(DOCUMENTS) * 5 and meta.source == f"hf:{folder} (split train)"


def test_offline_prepare_is_one_error_line_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    result = runner.invoke(app, ["prepare", "tinystories_10M", "--quiet"])
    assert time.perf_counter() - started < 2
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: the Hugging Face hub is unreachable (HF_HUB_OFFLINE is set), so hf:roneneldan/TinyStories cannot be "
        "streamed: connect to the network, or download the dataset where there is one and pass its folder: "
        "nash prepare hf:FOLDER --max-tokens 10000000"
    ]
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_unreachable_hub_is_one_error_line_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_stream, "hub_unreachable_reason", lambda: None)  # the probe passes; opening fails
    with mock.patch("datasets.load_dataset", side_effect=ConnectionError("Couldn't reach the Hub")):
        result = runner.invoke(app, ["prepare", "tinystories_10M", "--quiet"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not reach the Hugging Face hub dataset hf:roneneldan/TinyStories")
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_option_defaults_are_the_library_defaults():
    # The command spells them out so that `nash --help` need not import numpy and tiktoken.
    parameters = inspect.signature(prepare.command).parameters
    assert parameters["val_fraction"].default == DEFAULT_VAL_FRACTION
    assert parameters["shard_tokens"].default == DEFAULT_SHARD_TOKENS
