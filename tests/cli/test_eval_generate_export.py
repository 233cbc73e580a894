"""`nash eval`, `nash generate` and `nash export` on a real (tiny) trained run."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.data.pretrain import PretrainBatches
from nashcli.data.tokenizer import get_tokenizer
from nashcli.engine.loading import load_model
from nashcli.engine.trainer import train

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_run(tiny_config, tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    # lr 3e-2: four steps teach it the commonest tokens, so its accuracy is not zero.
    config = tiny_config(
        "name=tiny", f"runs_dir={runs_dir}", "train.max_steps=4", "train.eval_interval=2",
        "train.lr=3e-2", "train.min_lr=1e-3",
    )
    train(config)
    return runs_dir / "tiny"


def invoke(*args: str, stdin: str | None = None):
    return runner.invoke(app, [str(arg) for arg in args], input=stdin)


def eval_json(*args) -> dict:
    result = invoke("eval", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eval_reports_its_metrics_deterministically(trained_run, tiny_dataset):
    first = eval_json(trained_run, "--max-batches", "3")
    assert set(first) == {"val_loss", "val_bpb", "perplexity", "accuracy", "tokens", "bytes"}
    assert first["tokens"] == 3 * 4 * 16  # batches x batch size x context
    assert first["perplexity"] == pytest.approx(math.exp(first["val_loss"]), rel=1e-9)
    assert eval_json(trained_run, "--max-batches", "3") == first
    # The same numbers by hand: the best checkpoint on the first 3 fixed validation batches.
    model, _ = load_model(trained_run, "best", device="cpu")
    batches = PretrainBatches(tiny_dataset, "val", seq_len=16, batch_size=4, seed=0).eval_batches(3)
    inputs, targets = (torch.cat(tensors) for tensors in zip(*batches))  # (12, 16) each
    with torch.no_grad():
        logits = model(inputs).flatten(0, 1)  # (12 * 16, vocab_size)
    expected_loss = F.cross_entropy(logits, targets.flatten()).item()
    expected_accuracy = (logits.argmax(dim=-1) == targets.flatten()).float().mean().item()
    assert 0 < expected_accuracy < 1  # the trained model gets some tokens right, not all
    assert first["val_loss"] == pytest.approx(expected_loss, abs=1e-5)
    assert first["accuracy"] == pytest.approx(expected_accuracy, abs=1e-6)
    # Bits per byte: the summed loss in bits over the UTF-8 bytes of the targets' text.
    expected_bytes = len(get_tokenizer().decode_bytes(targets.flatten().tolist()))
    assert first["bytes"] == expected_bytes
    assert first["val_bpb"] == pytest.approx(expected_loss * targets.numel() / (math.log(2) * expected_bytes), rel=1e-6)


def test_eval_table_names_the_metrics(trained_run):
    result = invoke("eval", trained_run, "--max-batches", "1", "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    for name in ("val_loss", "val_bpb", "perplexity", "accuracy", "tokens", "bytes"):
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
    args = ["generate", trained_run, "--prompt", "ROMEO:", "--max-tokens", "12", "--no-stop-at-eot", "--seed"]
    first, second, other_seed = invoke(*args, "7"), invoke(*args, "7"), invoke(*args, "8")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[:-1] == second.output.splitlines()[:-1]  # the last line holds timings
    assert other_seed.output.splitlines()[:-1] != first.output.splitlines()[:-1]  # the seed is used
    assert first.output.startswith("ROMEO:")
    assert "12 tokens in" in first.output


def test_generate_writes_only_the_samples_to_stdout(trained_run):
    result = invoke("generate", trained_run, "--prompt", "ROMEO:", "--max-tokens", "5", "--num-samples", "2", "--seed", "1")
    assert result.exit_code == 0, result.output
    samples = result.stdout.splitlines()
    assert len(samples) == 2 and all(sample.startswith("ROMEO:") for sample in samples), result.stdout
    assert "sample 2/2" in result.stderr and "tokens in" in result.stderr and "tokens in" not in result.stdout


def test_eval_says_on_stderr_what_it_measured(trained_run, tiny_dataset):
    result = invoke("eval", trained_run, "--json", "--max-batches", "2")
    assert json.loads(result.stdout)["tokens"] == 2 * 4 * 16
    expected = f"evaluating on {tiny_dataset} ("
    assert result.stderr.startswith(expected) and "val split: 2 batches of 4 x 16 tokens, fp32 on cpu" in result.stderr


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
