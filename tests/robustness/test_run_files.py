"""The text files of a run folder and presets, damaged or hostile: `nash compare`, `nash plot` and
`nash train --preset` either work or give one error line, never a traceback."""

import pytest
from typer.testing import CliRunner

from nashcli.cli.app import app

from .checks import flip_random_bytes, one_error_line

runner = CliRunner()


def assert_works_or_one_error_line(result) -> None:
    if result.exit_code != 0:
        one_error_line(result)


@pytest.mark.parametrize("file_name", ["metrics.jsonl", "summary.json", "config.yaml"])
def test_compare_survives_damaged_run_files(make_run, file_name):
    make_run("good", summary={"steps": 60, "best_val_loss": 2.5})
    damaged = make_run("damaged", summary={"steps": 60, "best_val_loss": 2.4})
    original = (damaged / file_name).read_bytes()
    for seed in range(25):
        (damaged / file_name).write_bytes(flip_random_bytes(original, seed))
        assert_works_or_one_error_line(runner.invoke(app, ["compare", "runs/good", "runs/damaged"]))


@pytest.mark.parametrize(
    "line",
    ['[1, 2]', '"text"', '{"step": "7", "train_loss": 2.0}', '{"step": 3, "train_loss": "low"}', '{"step": true}'],
)
def test_a_hostile_metrics_line_names_its_line(make_run, line):
    make_run("good")
    run = make_run("hostile")
    records = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([records[0], line, *records[1:]]) + "\n")
    for command in (["plot", "runs/hostile", "--out", "plot.png"], ["compare", "runs/good", "runs/hostile"]):
        assert "metrics.jsonl line 2 is not a metrics record" in one_error_line(runner.invoke(app, command))


def test_plot_survives_a_damaged_metrics_file(make_run):
    run = make_run("damaged")
    original = (run / "metrics.jsonl").read_bytes()
    for seed in range(8):
        (run / "metrics.jsonl").write_bytes(flip_random_bytes(original, seed))
        assert_works_or_one_error_line(runner.invoke(app, ["plot", "runs/damaged", "--out", "plot.png"]))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe\x00binary", "is not UTF-8 text"),
        (b"- just\n- a list\n", "expected a mapping of config sections, got list"),
        (b"train: [unclosed\n", "line 2: invalid YAML"),
        (b"train: 5\n", "train"),
        (b"model: {n_layers: 1e400}\n", "model.n_layers"),
    ],
)
def test_a_hostile_preset_file_is_one_line(tmp_path, content, message):
    (tmp_path / "mine.yaml").write_bytes(content)
    result = runner.invoke(app, ["train", "--preset", "mine.yaml", "--dry-run"])
    assert message in one_error_line(result)
