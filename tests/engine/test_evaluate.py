"""Validation metrics (bits per byte next to the loss) and evaluation tasks during training."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.config.models import ModelConfig
from nashcli.data.pretrain import PretrainBatches
from nashcli.data.tokenizer import get_tokenizer
from nashcli.engine.evaluate import evaluate
from nashcli.engine.loading import load_model
from nashcli.engine.reporter import SilentReporter
from nashcli.engine.trainer import train
from nashcli.model.gpt import GPT
from nashcli.model.loss import IGNORE_INDEX
from nashcli.runs.metrics import read_metrics
from nashcli.tasks.registry import load_task
from nashcli.tasks.scoring import evaluate_task
from tests.tasks.files import hellaswag_records, write_jsonl

TEXT = "Héllo wörld! Bits per byte count UTF-8 bytes: naïve café, 😀, 東京.\nThe end."


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=64, max_seq_len=64)).eval()


def text_batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = get_tokenizer().encode(TEXT)
    return torch.tensor([tokens[:-1]]), torch.tensor([tokens[1:]])  # (1, T) each


def test_bits_per_byte_is_the_summed_loss_in_bits_over_the_targets_utf8_bytes(model):
    inputs, targets = text_batch()
    targets[0, 5:9] = IGNORE_INDEX  # ignored targets count neither their loss nor their bytes
    results = evaluate(model, [(inputs, targets)])
    kept = targets[0] != IGNORE_INDEX
    with torch.no_grad():
        logits = model(inputs)[0]  # (T, V)
    loss_sum = F.cross_entropy(logits[kept].double(), targets[0][kept], reduction="sum").item()
    num_bytes = len(get_tokenizer().decode_bytes(targets[0][kept].tolist()))
    assert num_bytes > len(targets[0][kept])  # multi-byte characters: bytes are not tokens or characters
    assert results["val_bytes"] == num_bytes and results["val_tokens"] == int(kept.sum())
    assert results["val_bpb"] == pytest.approx(loss_sum / (math.log(2) * num_bytes), rel=1e-6)
    assert results["val_loss"] == pytest.approx(loss_sum / int(kept.sum()), rel=1e-6)
    accuracy = (logits[kept].argmax(dim=-1) == targets[0][kept]).double().mean().item()
    assert results["val_accuracy"] == pytest.approx(accuracy)


def test_evaluation_sums_across_processes_through_the_callback(model):
    inputs, targets = text_batch()
    alone = evaluate(model, [(inputs, targets)])
    seen = []

    def two_processes(values):  # as if another process had evaluated the same batch
        seen.append(values)
        return [2 * value for value in values]

    doubled = evaluate(model, [(inputs, targets)], sum_across_processes=two_processes)
    assert len(seen) == 1 and len(seen[0]) == 4
    assert doubled["val_tokens"] == 2 * alone["val_tokens"] and doubled["val_bytes"] == 2 * alone["val_bytes"]
    assert doubled["val_bpb"] == pytest.approx(alone["val_bpb"]) and doubled["val_loss"] == pytest.approx(alone["val_loss"])


def test_no_targets_give_nan_not_an_error(model):
    inputs, targets = text_batch()
    results = evaluate(model, [(inputs, torch.full_like(targets, IGNORE_INDEX))])
    assert results["val_tokens"] == 0 and math.isnan(results["val_bpb"]) and math.isnan(results["val_loss"])


class Recorder(SilentReporter):
    def __init__(self):
        self.start, self.evals = None, []

    def on_start(self, info):
        self.start = info

    def on_eval(self, record):
        self.evals.append(record)


def test_training_scores_its_eval_tasks_and_logs_bits_per_byte(tiny_config, tiny_dataset, tmp_path):
    quiz = write_jsonl(tmp_path / "quiz.jsonl", hellaswag_records(10, seed=3))
    recorder = Recorder()
    train(tiny_config("name=tasks", f"train.eval_tasks=[mc:{quiz}]", "train.eval_task_limit=8"), reporter=recorder)
    assert f"eval task mc_quiz: 8 of 10 examples from {quiz}" in recorder.start.notes
    evals = [record for record in read_metrics(Path("runs/tasks/metrics.jsonl")) if "val_loss" in record]
    assert [record["step"] for record in evals] == [3, 6]
    # The logged task metrics are the final model's own scores on the first 8 examples.
    final, _ = load_model("runs/tasks", "last", device="cpu")
    expected = evaluate_task(final, load_task(f"mc:{quiz}", limit=8))
    assert evals[-1]["mc_quiz_acc"] == expected["acc"] and evals[-1]["mc_quiz_acc_norm"] == expected["acc_norm"]
    assert recorder.evals[-1].task_metrics == {"mc_quiz_acc": expected["acc"], "mc_quiz_acc_norm": expected["acc_norm"]}
    # Bits per byte: the summed loss in bits over the bytes of the 2 fixed validation batches' targets.
    batches = PretrainBatches(tiny_dataset, "val", seq_len=16, batch_size=4, seed=0).eval_batches(2)
    num_bytes = sum(len(get_tokenizer().decode_bytes(targets.flatten().tolist())) for _, targets in batches)
    for record in evals:
        assert record["val_bytes"] == num_bytes
        summed_loss = record["val_loss"] * record["val_tokens"]
        assert record["val_bpb"] * math.log(2) * record["val_bytes"] == pytest.approx(summed_loss, rel=1e-9)


def test_a_task_that_cannot_load_fails_the_run_before_its_first_step(train_args):
    result = CliRunner().invoke(app, ["train", "--run", "demo", *train_args("train.eval_tasks=[mc:missing.jsonl]")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: train.eval_tasks: no task file missing.jsonl: check the path"
    ]
    assert not Path("runs/demo/metrics.jsonl").exists()
