import json
import os
import signal
from pathlib import Path

import pytest
import torch

from nashcli.config import TrainConfig
from nashcli.data.pretrain import PretrainBatches
from nashcli.engine import trainer as trainer_module
from nashcli.engine.checkpoint import checkpoint_names
from nashcli.engine.checkpoint_reading import load_training_state
from nashcli.engine.loading import load_model
from nashcli.engine.reporter import SilentReporter
from nashcli.engine.schedule import learning_rate_at
from nashcli.engine.trainer import train
from nashcli.errors import NashError
from nashcli.runs.metrics import read_metrics


class Recorder(SilentReporter):
    """Records what the trainer reports; can send this process a Ctrl-C after a given step, or once
    the run's elapsed time reaches a given number of seconds."""

    def __init__(self, interrupt_after_step=None, interrupt_after_s=None):
        self.interrupt_after_step = interrupt_after_step
        self.interrupt_after_s = interrupt_after_s
        self.steps, self.evals, self.checkpoints, self.start, self.end = [], [], [], None, None

    def on_start(self, info):
        self.start = info

    def on_step(self, metrics):
        self.steps.append(metrics)
        if metrics.step == self.interrupt_after_step:
            os.kill(os.getpid(), signal.SIGINT)
        if self.interrupt_after_s is not None and metrics.elapsed_s >= self.interrupt_after_s:
            self.interrupt_after_s = None  # once: a second Ctrl-C would not wait for the save
            os.kill(os.getpid(), signal.SIGINT)

    def on_eval(self, metrics):
        self.evals.append(metrics)

    def on_checkpoint(self, path):
        self.checkpoints.append(path)

    def on_end(self, summary):
        self.end = summary


def losses(run: str, key: str = "train_loss") -> list:
    return [(record["step"], record[key]) for record in read_metrics(Path("runs", run, "metrics.jsonl")) if key in record]


@pytest.mark.parametrize(
    "optimizer", [[], ["train.optimizer.name=muon", "model.tie_embeddings=false"]], ids=["adamw", "muon"]
)
def test_resume_after_ctrl_c_matches_the_uninterrupted_run_bitwise(tiny_config, optimizer):
    # dropout proves the RNG is restored
    overrides = ["model.dropout=0.1", "train.grad_accum_steps=2", *optimizer]
    train(tiny_config("name=straight", *overrides))
    recorder = Recorder(interrupt_after_step=2)
    stopped = train(tiny_config("name=resumed", *overrides), reporter=recorder)
    # The Ctrl-C arrives during step 2's report; step 3 finishes and the run saves and stops.
    assert stopped.interrupted and stopped.steps == 3
    assert recorder.checkpoints == [Path("runs/resumed/checkpoints/last"), Path("runs/resumed/checkpoints/best")]
    assert recorder.end.resume_command == f"nash train --resume {Path('runs/resumed')}"
    assert not Path("runs/resumed/summary.json").exists()
    train(tiny_config(*overrides), resume=Path("runs/resumed"))
    assert losses("resumed") == losses("straight")  # exact float equality, every step
    assert losses("resumed", "val_loss") == losses("straight", "val_loss")
    assert [step for step, _ in losses("resumed")] == [1, 2, 3, 4, 5, 6]


def test_a_muon_run_learns_like_adamw_on_the_tiny_model(tiny_config):
    # The tiny model is mostly embedding (AdamW under both), so Muon's matrices can only match here.
    steps = ["train.max_steps=30", "train.eval_interval=0", "train.checkpoint_interval=0", "train.lr=3e-3"]
    train(tiny_config("name=adamw", *steps))
    train(tiny_config("name=muon", *steps, "train.optimizer.name=muon", "train.optimizer.lr=0.02"))
    for run in ("adamw", "muon"):
        first, last = losses(run)[0][1], losses(run)[-1][1]
        assert last < first - 1.2, (run, first, last)
    assert losses("muon", "val_loss")[-1][1] < losses("adamw", "val_loss")[-1][1] + 0.05


def test_a_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tiny_config, monkeypatch):
    real_forward_backward, calls = trainer_module.forward_backward, []

    def poisoned_after_four_steps(*args):
        totals = real_forward_backward(*args)
        calls.append(1)
        if len(calls) == 5:
            totals.loss_sum = totals.loss_sum * float("nan")
        return totals

    monkeypatch.setattr(trainer_module, "forward_backward", poisoned_after_four_steps)
    with pytest.raises(NashError, match=r"loss became nan at step 5.*last good checkpoint is in runs/poisoned"):
        train(tiny_config("name=poisoned"))
    assert load_training_state(Path("runs/poisoned/checkpoints/last"))["progress"]["step"] == 3
    model, config = load_model("runs/poisoned", "last", device="cpu")
    assert config.name == "poisoned" and not model.training


def test_resume_with_another_world_size_is_refused(tiny_config, reseal_checkpoint):
    train(tiny_config("name=solo", "train.max_steps=3"))
    state_path = Path("runs/solo/checkpoints/last/state.pt")
    state = load_training_state(state_path.parent)
    torch.save({**state, "world_size": 2, "ranks": state["ranks"] * 2}, state_path)
    reseal_checkpoint(state_path.parent)
    with pytest.raises(NashError, match="saved by 2 processes and this run has 1: .*--nproc_per_node=2"):
        train(tiny_config(), resume=Path("runs/solo"))


def test_a_finished_run_resumes_only_with_more_steps_and_a_taken_name_needs_overwrite(tiny_config):
    train(tiny_config("name=done", "train.max_steps=3"))
    with pytest.raises(NashError, match="already has 3 steps .*--set train.max_steps=N"):
        train(tiny_config("train.max_steps=3"), resume=Path("runs/done"))
    with pytest.raises(NashError, match="run folder runs/done already exists: .*--overwrite"):
        train(tiny_config("name=done"))
    summary = train(tiny_config("train.max_steps=4"), resume=Path("runs/done"))
    assert summary.steps == 4 and [step for step, _ in losses("done")] == [1, 2, 3, 4]


def test_init_from_starts_from_the_weights_with_their_shape_and_a_fresh_schedule(tiny_config, tiny_dataset):
    train(tiny_config("name=base", "train.max_steps=3"))
    recorder = Recorder()
    # A different model shape in the config: the weights' shape wins, and the display says so.
    config = tiny_config("name=tuned", "init_from=runs/base", "model.d_model=64", "train.warmup_steps=0")
    train(config, reporter=recorder)
    assert recorder.start.init_from == "runs/base"
    assert any("2 layers, 2 heads, 32 wide" in note for note in recorder.start.notes)
    assert any("d_model=64->32" in note for note in recorder.start.notes)
    pretrained, _ = load_model("runs/base", "best", device="cpu")
    inputs, targets = PretrainBatches(tiny_dataset, "train", seq_len=16, batch_size=4, seed=1337).next_batch()
    with torch.no_grad():
        expected = (pretrained(inputs, targets) / targets.numel()).item()
    assert recorder.steps[0].train_loss == pytest.approx(expected, abs=1e-5)
    assert recorder.steps[0].lr == pytest.approx(1e-3)  # step 0 of a fresh schedule


def test_bf16_and_fp16_runs_learn_like_fp32_on_cpu(tiny_config):
    # lr 3e-2 moves the tiny model's loss well away from its start (ln 50257 = 10.8) in three steps.
    fast = ["train.device=cpu", "train.max_steps=3", "train.lr=3e-2", "train.min_lr=1e-3", "train.warmup_steps=1"]
    for precision in ("fp32", "bf16", "fp16"):
        summary = train(tiny_config(f"name={precision}", f"train.precision={precision}", *fast))
        assert summary.precision == precision
        first_loss, last_loss = losses(precision)[0][1], losses(precision)[-1][1]
        assert last_loss < first_loss - 0.5, losses(precision)
        assert summary.final_val_loss < first_loss - 0.8, (summary.final_val_loss, first_loss)
        # The low precisions follow the fp32 run step by step: autocast changes rounding, not learning.
        for (step, loss), (_, fp32_loss) in zip(losses(precision), losses("fp32")):
            assert loss == pytest.approx(fp32_loss, abs=0.03), (precision, step)
    # The fp16 run's scaler was used and saved: it stepped three times with finite gradients
    # (no overflow halved the scale) and its state is in the checkpoint.
    scaler_state = load_training_state(Path("runs/fp16/checkpoints/last"))["grad_scaler"]
    assert (scaler_state["scale"], scaler_state["_growth_tracker"]) == (2.0**16, 3)
    assert load_training_state(Path("runs/bf16/checkpoints/last"))["grad_scaler"] == {}  # bf16: no scaler


# A time budget far below the step cap, with the only evaluation and checkpoint at the end.
BUDGETED = ["train.max_steps=100000", "train.eval_interval=0", "train.checkpoint_interval=0", "metrics.log_interval=50"]


def test_a_time_budget_ends_the_run_with_a_final_eval_a_checkpoint_and_a_summary(tiny_config):
    budget_s = 0.06 * 60
    wsd = ["train.schedule=wsd", "train.decay_fraction=0.5"]
    config = tiny_config("name=timed", "train.max_minutes=0.06", *wsd, *BUDGETED)
    recorder = Recorder()
    summary = train(config, reporter=recorder)
    assert not summary.interrupted and budget_s - 1e-3 <= summary.wall_time_s < budget_s + 5
    assert 3 <= summary.steps < 100000 and recorder.end == summary
    assert [record.step for record in recorder.evals] == [summary.steps]
    assert recorder.checkpoints == [Path("runs/timed/checkpoints/last"), Path("runs/timed/checkpoints/best")]
    assert load_training_state(Path("runs/timed/checkpoints/last"))["progress"]["step"] == summary.steps
    assert json.loads(Path("runs/timed/summary.json").read_text())["steps"] == summary.steps
    # After warmup the lr follows the budget fraction, measured during each step: between the
    # fractions at the previous step's end and at this step's end; min_lr once the budget is used.
    train_config = config.train
    for before, record in zip(recorder.steps[1:], recorder.steps[2:]):
        lowest = learning_rate_at(record.step - 1, train_config, train_config.lr, record.elapsed_s / budget_s)
        highest = learning_rate_at(record.step - 1, train_config, train_config.lr, before.elapsed_s / budget_s)
        assert lowest * (1 - 1e-5) <= record.lr <= highest * (1 + 1e-5)
    assert recorder.steps[-1].lr == train_config.min_lr


def test_a_resumed_run_keeps_the_rest_of_its_time_budget(tiny_config):
    budget_s = 0.08 * 60
    budgeted = ["train.max_minutes=0.08", *BUDGETED]
    stopped = train(tiny_config("name=budget", *budgeted), reporter=Recorder(interrupt_after_s=2.0))
    saved_s = load_training_state(Path("runs/budget/checkpoints/last"))["progress"]["elapsed_s"]
    assert stopped.interrupted and saved_s >= 2.0
    recorder = Recorder()
    summary = train(tiny_config(*budgeted), resume=Path("runs/budget"), reporter=recorder)
    assert recorder.start.elapsed_s == saved_s < recorder.steps[0].elapsed_s
    assert not summary.interrupted and summary.wall_time_s >= budget_s - 1e-3
    # Every step but the last went on because the run's time, earlier session included, was under the
    # budget when it was measured during the step: a fresh budget would have gone on past it.
    assert all(record.elapsed_s < budget_s for record in recorder.steps[:-2])
    with pytest.raises(NashError, match=r"already used its time budget .*--set train.max_minutes=M"):
        train(tiny_config(*budgeted), resume=Path("runs/budget"))
    used_s = load_training_state(Path("runs/budget/checkpoints/last"))["progress"]["elapsed_s"]
    longer = train(tiny_config(f"train.max_minutes={(used_s + 1) / 60}", *BUDGETED), resume=Path("runs/budget"))
    assert longer.steps > summary.steps and longer.wall_time_s >= used_s + 1 - 1e-3


def test_checkpoint_names_follow_interval_end_stop_and_best():
    config = TrainConfig(checkpoint_interval=5, keep_checkpoints=2)
    assert checkpoint_names(5, config, final=False, stopping=False, is_best=False) == ["last", "step_000005"]
    assert checkpoint_names(6, config, final=False, stopping=False, is_best=True) == ["best"]
    assert checkpoint_names(7, config, final=True, stopping=False, is_best=True) == ["last", "best"]
    assert checkpoint_names(8, config, final=False, stopping=True, is_best=False) == ["last"]
    assert checkpoint_names(9, config, final=False, stopping=False, is_best=False) == []
