
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from nashcli.cli import compare as compare_command
from nashcli.cli.app import app

runner = CliRunner()


def records_from(train_losses, val_losses):
    """A train record per step and an eval record every 2 steps."""
    records = []
    for step, loss in enumerate(train_losses, start=1):
        records.append({"step": step, "tokens": 256 * step, "train_loss": loss, "lr": 1e-3, "elapsed_s": float(step)})
        if step % 2 == 0:
            val_loss = val_losses[step // 2 - 1]
            records.append({"step": step, "tokens": 256 * step, "elapsed_s": step + 0.5, "val_loss": val_loss,
                            "val_perplexity": 2.718281828459045**val_loss, "val_accuracy": 1 / val_loss})
    return records


@pytest.fixture
def two_runs(make_run, tmp_path):
    make_run("base", records_from([5.0, 4.0, 3.5, 3.0], [4.5, 3.4]))
    fast = records_from([5.0, 3.0, 2.5, 2.4], [3.9, 2.9])
    make_run("fast", fast, overrides={"train": {"lr": 3e-3}, "model": {"n_layers": 4}})
    return tmp_path / "runs"


def assert_is_a_png(path):
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_plot_writes_a_png_in_the_run_folder_and_prints_its_path(two_runs):
    result = runner.invoke(app, ["plot", "base"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "runs/base/plot.png"
    assert_is_a_png(two_runs / "base" / "plot.png")


def test_plot_to_a_chosen_file_with_tokens_on_x(two_runs, tmp_path):
    out = tmp_path / "figures" / "lr.png"
    result = runner.invoke(app, ["plot", str(two_runs / "fast"), "--metrics", "train_loss,lr", "--x", "tokens",
                                 "--out", str(out), "--log-y"])
    assert result.exit_code == 0, result.output
    assert_is_a_png(out)


def test_plot_of_a_missing_metric_lists_the_metrics_the_run_has(two_runs):
    result = runner.invoke(app, ["plot", "base", "--metrics", "val_acc"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: run 'base' has no metric 'val_acc'; it has: elapsed_s, lr, train_loss, val_accuracy, val_loss, "
        "val_perplexity"
    ]


def test_plot_of_a_wandb_run_reads_its_history(monkeypatch, tmp_path):
    import wandb

    class FakeRun:
        name = "bright-sky-7"

        def history(self, samples, pandas):
            return [{"_step": step, "train_loss": 6.0 / (step + 1)} for step in range(50)]

    monkeypatch.setattr(wandb, "Api", lambda: type("FakeApi", (), {"run": lambda self, path: FakeRun()})())
    result = runner.invoke(app, ["plot", "--wandb", "me/nash/abc123"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "wandb-abc123.png"
    assert_is_a_png(tmp_path / "wandb-abc123.png")


def test_plot_without_a_run_says_what_to_name():
    result = runner.invoke(app, ["plot"])
    assert result.exit_code == 2
    assert "name a run folder (nash plot runs/NAME) or a wandb run" in result.output


@pytest.mark.parametrize("command", [["plot", "nope"], ["compare", "base", "nope"]])
def test_a_missing_run_is_one_line_and_a_non_zero_exit(two_runs, command):
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]


def table_row(output, first_cell):
    """The cells of the table line that starts with `first_cell`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").replace("┃", "│").split("│")]
        if cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no line {first_cell!r} in:\n{output}")


def test_compare_prints_results_and_the_config_keys_that_differ(two_runs):
    result = runner.invoke(app, ["compare", "base", "fast"])
    assert result.exit_code == 0, result.output
    assert_is_a_png(two_runs / "base" / "compare.png")
    assert result.output.strip().endswith("figure: runs/base/compare.png")
    assert table_row(result.output, "result") == ["base", "fast"]
    assert table_row(result.output, "final train loss") == ["3.0000", "2.4000"]
    assert table_row(result.output, "best val loss") == ["3.4000", "2.9000"]
    assert table_row(result.output, "steps") == ["4", "4"]
    assert table_row(result.output, "model.n_layers") == ["12", "4"]
    assert table_row(result.output, "train.lr") == ["6.000e-04", "0.0030"]
    assert "train.batch_size" not in result.output  # keys with equal values are not listed


def test_compare_highlights_the_lowest_loss_and_the_highest_accuracy(two_runs, monkeypatch):
    # Record what make_table was asked to highlight: the styling is invisible in captured text.
    tables = []
    real_make_table = compare_command.make_table

    def recording_make_table(title, columns, rows, highlight=None):
        rows = [list(row) for row in rows]
        tables.append((rows, highlight))
        return real_make_table(title, columns, rows, highlight)

    monkeypatch.setattr(compare_command, "make_table", recording_make_table)
    result = runner.invoke(app, ["compare", "base", "fast"])
    assert result.exit_code == 0, result.output
    rows, highlight = tables[0]
    highlighted = {(rows[row][0], column) for row, column in highlight}
    # Column 1 is run "base", column 2 run "fast", which has the lower losses and higher accuracy.
    assert {("best val loss", 2), ("final train loss", 2), ("perplexity", 2), ("accuracy", 2)} <= highlighted
    assert ("tokens/s", 1) in highlighted and ("tokens/s", 2) in highlighted  # a tie marks both
    assert not any(name in {"steps", "tokens", "wall time (s)"} for name, _ in highlighted)
    assert not any(column == 1 and "loss" in name for name, column in highlighted)


def test_compare_needs_two_runs(two_runs):
    result = runner.invoke(app, ["compare", "base"])
    assert result.exit_code == 2
    assert "needs two or more runs" in result.output


def test_bits_per_byte_and_task_metrics_are_plotted_and_compared(make_run, tmp_path):
    def evals(bpb, acc_norm):
        return [{"step": step, "tokens": 256 * step, "val_loss": 3.0 / step, "val_bpb": bpb / step,
                 "hellaswag_acc": acc_norm - 0.01, "hellaswag_acc_norm": acc_norm + 0.001 * step} for step in (1, 2, 3)]

    make_run("base", evals(1.5, 0.26))
    make_run("better", evals(1.2, 0.29))
    result = runner.invoke(app, ["plot", "base", "better", "--metrics", "hellaswag_acc_norm,val_bpb"])
    assert result.exit_code == 0, result.output
    assert_is_a_png(tmp_path / "runs" / "base" / "plot.png")
    result = runner.invoke(app, ["compare", "base", "better", "--metrics", "val_bpb,hellaswag_acc_norm"])
    assert result.exit_code == 0, result.output
    assert table_row(result.output, "val bits per byte") == ["0.5000", "0.4000"]
    assert table_row(result.output, "hellaswag_acc_norm") == ["0.2630", "0.2930"]
    assert table_row(result.output, "hellaswag_acc") == ["0.2500", "0.2800"]
