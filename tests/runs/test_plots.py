import numpy as np
import pytest
import wandb
from matplotlib.image import imread

from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout
from nashcli.runs.plots import (
    RunCurves,
    auto_smoothing_weight,
    choose_metrics,
    ema_smooth,
    is_noisy_metric,
    load_run_curves,
    load_wandb_curves,
    parse_metric_names,
    plot_runs,
)


def assert_is_a_drawn_png(path, min_width):
    image = imread(path)  # (H, W, 4) floats in [0, 1] for a PNG
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 300 and image.shape[1] >= min_width
    # Not blank: a white canvas has one value; curves, axes and text add many.
    assert image[..., :3].std() > 0.05
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 50


def test_ema_of_a_known_sequence_is_debiased():
    # s = 0.5 s + 0.5 v: 1, 2.5, 5.25; divided by 1 - 0.5^(t+1): 0.5, 0.75, 0.875.
    np.testing.assert_allclose(ema_smooth([2.0, 4.0, 8.0], 0.5), [2.0, 10 / 3, 6.0])
    np.testing.assert_allclose(ema_smooth([3.0] * 5, 0.9), [3.0] * 5)


def test_ema_with_weight_zero_is_the_raw_curve():
    np.testing.assert_array_equal(ema_smooth([5.0, 1.0, 3.0], 0.0), [5.0, 1.0, 3.0])
    with pytest.raises(ValueError):
        ema_smooth([1.0], 1.0)


def test_auto_smoothing_window_is_a_twentieth_of_the_curve():
    assert auto_smoothing_weight(20) == 0.0
    assert auto_smoothing_weight(30) == pytest.approx(1 / 3)
    assert auto_smoothing_weight(300) == pytest.approx(14 / 15)
    assert auto_smoothing_weight(1_000_000) == 0.99


def test_only_per_step_training_metrics_are_smoothed():
    assert [is_noisy_metric(name) for name in ["train_loss", "train/loss", "grad_norm", "train/grad_norm"]] == [True] * 4
    assert [is_noisy_metric(name) for name in ["val_loss", "lr", "tokens_per_s", "val/loss"]] == [False] * 4


def test_series_pairs_x_with_the_metric_only_where_both_are_logged(synthetic_records):
    run = RunCurves("a", synthetic_records(steps=60, eval_every=20, tokens_per_step=1024))
    steps, val = run.series("val_loss", "step")
    tokens, _ = run.series("val_loss", "tokens")
    np.testing.assert_array_equal(steps, [20, 40, 60])
    np.testing.assert_array_equal(tokens, [20 * 1024, 40 * 1024, 60 * 1024])
    assert len(val) == 3
    assert run.metrics() == [
        "elapsed_s", "lr", "tokens_per_s", "train_loss", "val_accuracy", "val_loss", "val_perplexity"
    ]


def test_missing_metric_names_the_metrics_the_run_has():
    run = RunCurves("tiny", [{"step": 1, "tokens": 8, "train_loss": 3.0, "lr": 0.1}])
    with pytest.raises(NashError) as error:
        choose_metrics([run], ["train_loss", "val_loss"])
    assert str(error.value) == "run 'tiny' has no metric 'val_loss'; it has: lr, train_loss"


def test_metric_names_are_split_on_commas():
    assert parse_metric_names(" train_loss, val_loss ,") == ["train_loss", "val_loss"]
    assert parse_metric_names(None) is None and parse_metric_names(" , ") is None


def test_default_metrics_are_those_the_runs_have():
    trained_only = RunCurves("a", [{"step": 1, "train_loss": 3.0}])
    with_eval = RunCurves("b", [{"step": 1, "train_loss": 3.0, "val_loss": 3.1}])
    assert choose_metrics([trained_only], None) == ["train_loss"]
    assert choose_metrics([trained_only, with_eval], None) == ["train_loss", "val_loss"]
    with pytest.raises(NashError, match="pick with --metrics from: loss"):
        choose_metrics([RunCurves("c", [{"step": 1, "loss": 2.0}])], None)


def test_plot_writes_a_png_with_one_panel_per_metric(tmp_path, synthetic_records):
    run = RunCurves("tiny", synthetic_records())
    out = plot_runs([run], ["train_loss", "val_loss"], tmp_path / "figs" / "plot.png", x="tokens", log_y=True)
    assert out == tmp_path / "figs" / "plot.png"
    assert_is_a_drawn_png(out, min_width=1100)  # two 5.5-inch panels at 110 dpi
    one_panel = plot_runs([run], ["train_loss"], tmp_path / "one.png")
    assert imread(one_panel).shape[1] < 700


def test_plot_overlays_several_runs(tmp_path, synthetic_records):
    runs = [RunCurves("a", synthetic_records(start_loss=10.0)), RunCurves("b", synthetic_records(start_loss=6.0))]
    assert_is_a_drawn_png(plot_runs(runs, ["train_loss", "val_loss", "lr"], tmp_path / "o.png", smoothing=0.8), 1600)


def test_tokens_axis_needs_tokens_in_the_records(tmp_path):
    run = RunCurves("old", [{"step": 1, "train_loss": 3.0}, {"step": 2, "train_loss": 2.0}])
    with pytest.raises(NashError, match="run 'old' has no 'tokens' in its metrics; use --x step"):
        plot_runs([run], ["train_loss"], tmp_path / "p.png", x="tokens")


def test_local_run_curves_are_read_from_metrics_jsonl(make_run, tmp_path, synthetic_records):
    make_run("tiny", records=synthetic_records(steps=40, eval_every=20))
    curves = load_run_curves(RunLayout.find("tiny", tmp_path / "runs"))
    assert curves.label == "tiny"
    assert len(curves.records) == 42
    assert curves.series("val_loss")[0].tolist() == [20.0, 40.0]


class FakeWandbRun:
    name = "bright-sky-7"

    def __init__(self, rows):
        self.rows = rows
        self.history_calls = []

    def history(self, **kwargs):
        self.history_calls.append(kwargs)
        return self.rows


def fake_wandb_api(monkeypatch, run=None, error=None):
    opened = []

    class FakeApi:
        def run(self, path):
            opened.append(path)
            if error is not None:
                raise error
            return run

    monkeypatch.setattr(wandb, "Api", FakeApi)
    return opened


def test_wandb_run_history_becomes_curves(monkeypatch, tmp_path):
    rows = [{"_step": i, "_runtime": i * 0.5, "train_loss": 5.0 - 0.1 * i} for i in range(30)]
    run = FakeWandbRun(rows)
    opened = fake_wandb_api(monkeypatch, run=run)
    curves = load_wandb_curves("me/nash/abc123")
    assert opened == ["me/nash/abc123"]
    assert run.history_calls == [{"samples": 2000, "pandas": False}]
    assert curves.label == "bright-sky-7"
    assert curves.metrics() == ["train_loss"]  # wandb's _step/_runtime are not metrics
    assert curves.series("train_loss")[0].tolist() == list(range(30))
    assert_is_a_drawn_png(plot_runs([curves], ["train_loss"], tmp_path / "w.png"), 500)


def test_wandb_auth_failure_is_one_line(monkeypatch):
    fake_wandb_api(monkeypatch, error=wandb.errors.CommError("403 Forbidden: permission denied\n<html>...</html>"))
    with pytest.raises(NashError) as error:
        load_wandb_curves("me/nash/abc123")
    assert str(error.value) == (
        "could not read wandb run 'me/nash/abc123': 403 Forbidden: permission denied "
        "(check the path, `wandb login` and the network)"
    )


def test_wandb_path_must_have_three_parts():
    with pytest.raises(NashError, match="--wandb takes ENTITY/PROJECT/RUN_ID, got 'nash/abc'"):
        load_wandb_curves("nash/abc")
