"""`nash eval`, `nash generate` and `nash export` on a real (tiny) trained run."""

import json
import math

import pytest
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.engine.trainer import train

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_run(tiny_config, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    config = tiny_config("name=tiny", f"runs_dir={runs_dir}", "train.max_steps=4", "train.eval_interval=2")
    train(config)
    return runs_dir / "tiny"


def invoke(*args: str, stdin: str | None = None):
    return runner.invoke(app, [str(arg) for arg in args], input=stdin)


def eval_json(*args) -> dict:
    result = invoke("eval", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eval_reports_the_four_keys_deterministically(trained_run):
    first = eval_json(trained_run, "--max-batches", "3")
    assert set(first) == {"val_loss", "perplexity", "accuracy", "tokens"}
    assert first["tokens"] == 3 * 4 * 16  # batches x batch size x context
    assert first["perplexity"] == pytest.approx(math.exp(first["val_loss"]), rel=1e-9)
    assert 0.0 <= first["accuracy"] <= 1.0
    assert eval_json(trained_run, "--max-batches", "3") == first


def test_eval_table_names_the_metrics(trained_run):
    result = invoke("eval", trained_run, "--max-batches", "1", "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    for name in ("val_loss", "perplexity", "accuracy", "tokens"):
        assert name in result.output


def test_exported_weights_evaluate_exactly_like_the_run(trained_run, tiny_dataset, tmp_path):
    out = tmp_path / "hf"
    result = invoke("export", trained_run, "--out", out, "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {"config.json", "model.safetensors"}
    from_run = eval_json(trained_run, "--checkpoint", "last", "--max-batches", "2", "--device", "cpu")
    from_hf = eval_json(
        f"hf:{out}", "--data", tiny_dataset, "--max-batches", "2", "--batch-size", "4", "--precision", "fp32"
    )
    assert from_hf["tokens"] == from_run["tokens"]
    assert from_hf["val_loss"] == pytest.approx(from_run["val_loss"], abs=1e-5)


def test_generate_with_a_seed_is_reproducible(trained_run):
    args = ["generate", trained_run, "--prompt", "ROMEO:", "--max-tokens", "12", "--seed", "7", "--no-stop-at-eot"]
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[:-1] == second.output.splitlines()[:-1]  # the last line holds timings
    assert first.output.startswith("ROMEO:")
    assert "12 tokens in" in first.output


def test_generate_reads_the_prompt_from_stdin(trained_run):
    result = invoke("generate", trained_run, "--prompt", "-", "--max-tokens", "3", "--temperature", "0", stdin="JULIET:")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("JULIET:")


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "no-such-run"],
        ["generate", "no-such-run", "--prompt", "hi"],
        ["export", "no-such-run", "--out", "exported"],
        ["plot", "no-such-run"],
        ["compare", "no-such-run", "other-run"],
    ],
)
def test_a_missing_run_is_one_clear_line(args):
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no run 'no-such-run'"), result.output


def test_a_run_without_checkpoints_says_so(tmp_path):
    from nashcli.config import NashConfig
    from nashcli.runs.layout import RunLayout

    layout = RunLayout(tmp_path / "runs" / "empty")
    layout.write_config(NashConfig(name="empty"))
    layout.metrics_path.write_text("")
    result = invoke("eval", layout.root)
    assert result.exit_code == 2
    assert "has not saved one yet" in result.output
