"""`nash train` end to end through the CLI on a tiny prepared corpus."""

import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nashcli.cli.app import app
from nashcli.runs.metrics import read_metrics

runner = CliRunner()


def test_train_writes_config_metrics_checkpoints_summary_and_wandb_offline(train_args):
    result = runner.invoke(app, ["train", "--run", "demo", *train_args("metrics.wandb=offline")])
    assert result.exit_code == 0, result.output
    run = Path("runs/demo")
    assert "name: demo" in (run / "config.yaml").read_text()
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3, 4]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for r in evals:  # 2 eval batches of 4 rows of 16 targets
        assert r["val_tokens"] == 2 * 4 * 16 and r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"]))
    for which in ("last", "best"):
        assert {p.name for p in (run / "checkpoints" / which).iterdir()} == {
            "model.safetensors", "state.pt", "checkpoint.json"
        }
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["steps"], summary["tokens"]) == (4, 4 * 4 * 16)
    assert summary["final_val_loss"] == evals[-1]["val_loss"]
    assert len(list((run / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    assert "eval step 4: val loss" in result.output  # plain lines: CliRunner is not a terminal
    assert "step 4/4" in result.output


def test_resume_continues_a_run_with_its_own_config(train_args):
    first = runner.invoke(app, ["train", "--run", "demo", "--quiet", *train_args()])
    assert first.exit_code == 0, first.output
    assert "eval step" not in first.output and "run runs/demo" in first.output  # quiet: the summary only
    resumed = runner.invoke(app, ["train", "--resume", "runs/demo", "--set", "train.max_steps=6"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming at step 4" in resumed.output
    records = read_metrics(Path("runs/demo/metrics.jsonl"))
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3, 4, 5, 6]


def test_a_resume_with_another_optimizer_is_one_line_and_changes_nothing(train_args):
    assert runner.invoke(app, ["train", "--run", "demo", *train_args("train.max_steps=2")]).exit_code == 0
    before = {path: path.read_bytes() for path in Path("runs/demo").rglob("*") if path.is_file()}
    switched = ["--set", "train.optimizer.name=muon", "--set", "train.max_steps=4"]
    result = runner.invoke(app, ["train", "--resume", "runs/demo", *switched])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {Path('runs/demo/checkpoints/last/state.pt')} cannot be resumed from: it was saved by "
        "train.optimizer.name=adamw and this run uses muon: resume with --set train.optimizer.name=adamw, "
        "or start a new run from its weights with --init-from"
    ]
    assert {path: path.read_bytes() for path in Path("runs/demo").rglob("*") if path.is_file()} == before


def test_a_time_budget_shows_the_time_left_and_ends_a_finished_run(train_args):
    budgeted = train_args("train.max_minutes=0.05", "train.max_steps=100000", "train.eval_interval=0")
    result = runner.invoke(app, ["train", "--run", "timed", *budgeted])
    assert result.exit_code == 0, result.output
    assert "0.05 min (3s left)" in result.output and re.search(r"step 1  loss .*s, \d+s left", result.output)
    summary = json.loads(Path("runs/timed/summary.json").read_text())
    assert summary["wall_time_s"] >= 3.0 - 1e-3 and f"eval step {summary['steps']}: val loss" in result.output


def test_a_taken_run_name_and_resume_with_a_preset_are_one_line_errors(train_args):
    assert runner.invoke(app, ["train", "--run", "demo", "--quiet", *train_args()]).exit_code == 0
    taken = runner.invoke(app, ["train", "--run", "demo", *train_args()])
    assert taken.exit_code == 2
    assert taken.output.strip().splitlines() == [
        "error: run folder runs/demo already exists: resume it with `nash train --resume runs/demo`, choose "
        "another name with --run, or replace it with --overwrite"
    ]
    replaced = runner.invoke(app, ["train", "--run", "demo", "--overwrite", "--quiet", *train_args()])
    assert replaced.exit_code == 0, replaced.output
    both = runner.invoke(app, ["train", "--resume", "runs/demo", "--preset", "tiny"])
    assert both.exit_code == 2 and "--resume continues a run with its own config" in both.output


def test_default_run_name_is_the_preset_and_a_timestamp(train_args):
    result = runner.invoke(app, ["train", "--preset", "tiny", "--quiet", *train_args("train.max_steps=1")])
    assert result.exit_code == 0, result.output
    (run,) = Path("runs").iterdir()
    assert run.name.startswith("tiny-") and (run / "summary.json").is_file()


def test_sft_from_a_pretrained_run_previews_which_tokens_carry_loss(train_args):
    base = runner.invoke(app, ["train", "--run", "base", "--quiet", *train_args("train.max_steps=2")])
    assert base.exit_code == 0, base.output
    lines = [json.dumps({"prompt": f"Q: {n} + 1?\nA:", "completion": f" {n + 1}"}) for n in range(20)]
    Path("sft.jsonl").write_text("\n".join(lines) + "\n")
    sft = ["--set", "data.sft_file=sft.jsonl", "--set", "train.max_steps=2", "--set", "train.warmup_steps=1"]
    sft += ["--set", "train.batch_size=2", "--set", "train.grad_accum_steps=1", "--set", "train.eval_batches=1"]
    result = runner.invoke(app, ["train", "--preset", "sft", "--init-from", "runs/base", "--run", "tuned", *sft])
    assert result.exit_code == 0, result.output
    assert "SFT: 20 examples kept, 0 truncated (prompt start dropped), 0 skipped" in result.output
    assert "<|endoftext|>" in result.output and "Q: " in result.output
    assert "model shape from runs/base: 2 layers, 2 heads, 32 wide, context 16" in result.output
    assert [r["step"] for r in read_metrics(Path("runs/tuned/metrics.jsonl")) if "val_loss" in r] == [2]
