"""--overwrite and --force replace only what nash made, and only after everything is checked; typed
option values; a resume that would change the model is refused. Every refusal leaves the files
that were there byte-identical."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nashcli.cli.app import app

from .checks import one_error_line, snapshot

runner = CliRunner()


@pytest.fixture
def trained_run(train_args) -> Path:
    result = runner.invoke(app, ["train", "--run", "ft", "--quiet", *train_args()])
    assert result.exit_code == 0, result.output
    return Path("runs/ft")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "data.dataset=./data/nosuch"], "no prepared dataset"),
        (["--init-from", "runs/nosuch"], "no run 'runs/nosuch'"),
        (["--set", "model.max_seq_len=4096"], "fewer than one sequence"),
    ],
    ids=["missing-dataset", "missing-init-weights", "data-too-short"],
)
def test_overwrite_that_fails_validation_leaves_the_old_run_untouched(trained_run, train_args, extra, message):
    before = snapshot(trained_run)
    result = runner.invoke(app, ["train", "--run", "ft", "--overwrite", *train_args(), *extra])
    assert message in one_error_line(result)
    assert snapshot(trained_run) == before
    assert sorted(path.name for path in trained_run.parent.iterdir()) == ["ft"]  # no lock file, no half-built run


def test_overwrite_init_from_the_same_run_reads_its_weights_before_replacing_it(trained_run, train_args):
    old_metrics = (trained_run / "metrics.jsonl").read_text()
    result = runner.invoke(app, ["train", "--run", "ft", "--overwrite", "--init-from", "runs/ft", *train_args()])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["init_from"] == "runs/ft"
    assert (trained_run / "metrics.jsonl").read_text() != old_metrics  # a new run, started from the old weights
    assert sorted(path.name for path in trained_run.parent.iterdir()) == ["ft"]


def test_overwrite_refuses_a_folder_holding_files_nash_did_not_write(tmp_path, trained_run, train_args):
    (trained_run / "notes.md").write_text("my notes")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("print('my code')")
    (tmp_path / "src" / "config.yaml").write_text("name: src\n")
    before = snapshot(tmp_path / "runs") | {f"src/{k}": v for k, v in snapshot(tmp_path / "src").items()}

    in_runs = runner.invoke(app, ["train", "--run", "ft", "--overwrite", *train_args()])
    assert "runs/ft holds notes.md, which nash did not write" in one_error_line(in_runs)
    in_cwd = runner.invoke(app, ["train", "--run", "src", "--overwrite", *train_args("runs_dir=.")])
    assert "src holds model.py, which nash did not write" in one_error_line(in_cwd)
    assert snapshot(tmp_path / "runs") | {f"src/{k}": v for k, v in snapshot(tmp_path / "src").items()} == before


def test_prepare_force_refuses_a_folder_holding_files_nash_did_not_write(tmp_path):
    folder = tmp_path / "data" / "mine"
    (folder / "src").mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    (folder / "src" / "train.py").write_text("print('my code')")
    before = snapshot(folder)
    result = runner.invoke(app, ["prepare", "shakespeare", "--out", str(folder), "--force", "--quiet"])
    assert "holds src, which nash did not write" in one_error_line(result)
    assert snapshot(folder) == before
    assert sorted(path.name for path in folder.parent.iterdir()) == ["mine"]


def test_prepare_force_swaps_the_rebuilt_dataset_in_whole(tmp_path):
    args = ["prepare", "shakespeare", "--out", "data/s", "--quiet", "--val-fraction", "0.1", "--max-tokens"]
    assert runner.invoke(app, [*args, "150000"]).exit_code == 0
    first = snapshot(Path("data/s"))
    rebuilt = runner.invoke(app, [*args, "200000", "--force"])
    assert rebuilt.exit_code == 0, rebuilt.output
    second = snapshot(Path("data/s"))
    assert second.keys() == first.keys() and second["meta.json"] != first["meta.json"]
    assert sorted(path.name for path in Path("data").iterdir()) == ["s"]


@pytest.mark.parametrize("name", ["2024", "yes", "007", "null", "1e3"])
def test_run_names_are_taken_as_typed(train_args, name):
    result = runner.invoke(app, ["train", "--run", name, "--dry-run", *train_args()])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output.split("┏")[0])["name"] == name


def test_an_invalid_run_name_names_the_option(train_args):
    result = runner.invoke(app, ["train", "--run", "../elsewhere", "--dry-run", *train_args()])
    assert one_error_line(result).startswith("error: --run: name='../elsewhere': String should match pattern")


def test_a_bad_set_value_names_its_set_not_the_preset(train_args):
    result = runner.invoke(app, ["train", "--preset", "tiny", "--dry-run", *train_args("train.lr=-1")])
    assert one_error_line(result) == "error: --set train.lr: train.lr=-1: Input should be greater than 0"


def test_resume_refuses_to_change_the_model_shape(trained_run):
    before = snapshot(trained_run)
    result = runner.invoke(app, ["train", "--resume", "runs/ft", "--set", "model.d_model=64", "--set", "train.max_steps=6"])
    assert "--resume keeps the run's model: model.d_model is 32" in one_error_line(result)
    assert snapshot(trained_run) == before


def test_resume_of_a_finished_run_changes_nothing(trained_run):
    before = snapshot(trained_run)
    result = runner.invoke(app, ["train", "--resume", "runs/ft"])
    assert "already has 4 steps" in one_error_line(result)
    assert snapshot(trained_run) == before
