"""`nash eval --task`: a task's accuracy through the CLI (no network: the fetch is faked)."""

import json
import urllib.error

import pytest
import torch
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.config.models import ModelConfig
from nashcli.model.gpt import GPT
from nashcli.model.hf import export_hf
from nashcli.tasks import cache, hellaswag
from nashcli.tasks.registry import load_task
from nashcli.tasks.scoring import evaluate_task
from tests.tasks.files import write_hellaswag_file

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_network(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))

    def offline(url):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(cache, "open_url", offline)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny random GPT saved in the Hugging Face format: hf:FOLDER, and the model itself."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=64, max_seq_len=32)).eval()
    folder = tmp_path_factory.mktemp("hf")
    export_hf(model, folder)
    return f"hf:{folder}", model


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def test_eval_task_json_is_the_tasks_accuracy(weights, tmp_path):
    source, model = weights
    quiz = write_hellaswag_file(tmp_path / "quiz.jsonl", 12, seed=2)
    result = invoke("eval", source, "--task", f"mc:{quiz}", "--json", "--device", "cpu", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results == {"task": "mc_quiz", **evaluate_task(model, load_task(f"mc:{quiz}"))}
    assert results["count"] == 12


def test_eval_hellaswag_from_a_task_file_with_a_limit_prints_a_table(weights, tmp_path):
    source, _ = weights
    copy = write_hellaswag_file(tmp_path / "hellaswag_val.jsonl", 9)
    result = invoke("eval", source, "--task", "hellaswag", "--task-file", copy, "--limit", "5", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for name in ("acc", "acc_norm", "count"):
        assert name in result.output
    assert "hellaswag: 5 of 9 examples" in result.output


def test_eval_hellaswag_offline_is_one_line_naming_where_the_file_goes(weights):
    result = invoke("eval", weights[0], "--task", "hellaswag", "--json")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: could not download HellaSwag's validation set from {hellaswag.URL} (network is unreachable): "
        f"download it by hand and save it as {hellaswag.cached_path()}, or pass its path with --task-file PATH"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--limit", "5"], "--limit and --task-file go with --task: add --task hellaswag (or mc:PATH)"),
        (["--task", "hellaswag", "--max-batches", "2"], "--task scores a task, not a dataset: drop --data"),
        (["--task", "lambada"], "unknown task 'lambada': choose from hellaswag, mc:PATH"),
    ],
)
def test_eval_task_option_mistakes_are_one_line(weights, args, message):
    result = invoke("eval", weights[0], *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
