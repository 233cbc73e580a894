import math

import pytest

from nashcli.config import NashConfig
from nashcli.errors import NashError
from nashcli.runs.compare import (
    ConfigDifference,
    RunResult,
    best_runs,
    compare_runs,
    config_differences,
    flatten_config,
    run_result,
)
from nashcli.runs.layout import RunLayout


def result(name, **values):
    empty = dict.fromkeys(
        ["final_train_loss", "best_val_loss", "final_val_loss", "val_perplexity", "val_accuracy", "steps",
         "tokens", "wall_time_s", "tokens_per_s"]
    )
    return RunResult(name=name, **{**empty, **values})


def test_flatten_config_gives_dotted_keys_and_keeps_lists_whole():
    flat = flatten_config({"name": "a", "train": {"lr": 1e-3, "betas": [0.9, 0.95]}, "model": {"n_layers": 2}})
    assert flat == {"name": "a", "train.lr": 1e-3, "train.betas": [0.9, 0.95], "model.n_layers": 2}


def test_config_differences_name_only_the_keys_that_differ():
    base = NashConfig(name="a").model_dump(mode="json")
    other = NashConfig(name="b", train={"lr": 3e-3, "betas": (0.9, 0.99)}, model={"n_layers": 4})
    other = other.model_dump(mode="json")
    differences = config_differences([base, other, base])
    assert differences == [
        ConfigDifference("model.n_layers", (12, 4, 12)),
        ConfigDifference("train.betas", ([0.9, 0.95], [0.9, 0.99], [0.9, 0.95])),
        ConfigDifference("train.lr", (6e-4, 3e-3, 6e-4)),
    ]
    assert config_differences([base, base]) == []


def test_config_key_missing_from_one_run_counts_as_a_difference():
    assert config_differences([{"train": {"lr": 1.0, "new_knob": 2}}, {"train": {"lr": 1.0}}]) == [
        ConfigDifference("train.new_knob", (2, None))
    ]


def test_results_are_derived_from_metrics_when_there_is_no_summary():
    records = [
        {"step": 10, "tokens": 1000, "train_loss": 4.0, "elapsed_s": 5.0},
        {"step": 10, "tokens": 1000, "elapsed_s": 6.0, "val_loss": 3.0, "val_perplexity": math.exp(3.0),
         "val_accuracy": 0.2},
        {"step": 20, "tokens": 2000, "train_loss": 2.5, "elapsed_s": 9.0},
        {"step": 20, "tokens": 2000, "elapsed_s": 10.0, "val_loss": 3.2, "val_perplexity": math.exp(3.2),
         "val_accuracy": 0.25},
    ]
    assert run_result("a", records, summary={}) == RunResult(
        name="a", final_train_loss=2.5, best_val_loss=3.0, final_val_loss=3.2, val_perplexity=math.exp(3.2),
        val_accuracy=0.25, steps=20, tokens=2000, wall_time_s=10.0, tokens_per_s=200.0,
    )


def test_summary_values_take_precedence_over_derived_ones():
    records = [{"step": 5, "tokens": 500, "train_loss": 4.0, "elapsed_s": 5.0}]
    summary = {"steps": 5, "tokens": 500, "wall_time_s": 4.0, "tokens_per_s": 125.0, "final_train_loss": 3.9,
               "best_val_loss": None, "parameters": 123}
    got = run_result("a", records, summary)
    assert (got.final_train_loss, got.wall_time_s, got.tokens_per_s, got.best_val_loss) == (3.9, 4.0, 125.0, None)


def test_a_run_without_records_has_no_results():
    assert run_result("empty", [], {}) == result("empty")


def test_best_is_the_minimum_for_losses_and_the_maximum_for_accuracy_and_speed():
    results = [
        result("a", final_train_loss=3.0, best_val_loss=3.5, val_accuracy=0.30, tokens_per_s=900.0, steps=100),
        result("b", final_train_loss=2.0, best_val_loss=3.6, val_accuracy=0.35, tokens_per_s=800.0, steps=200),
        result("c", final_train_loss=2.0, best_val_loss=None, val_accuracy=None, tokens_per_s=1000.0, steps=50),
    ]
    assert best_runs(results) == {
        "final_train_loss": (1, 2),  # a tie: both are best
        "best_val_loss": (0,),
        "val_accuracy": (1,),
        "tokens_per_s": (2,),
    }  # steps has no better end; results no run has are left out


def test_compare_runs_reads_the_run_folders(make_run, synthetic_records, tmp_path):
    make_run("base", records=synthetic_records(start_loss=10.0))
    make_run("wide", records=synthetic_records(start_loss=5.0), overrides={"model": {"d_model": 960}},
             summary={"steps": 60, "tokens": 61440, "wall_time_s": 100.0, "tokens_per_s": 614.4})
    layouts = [RunLayout.find(name, tmp_path / "runs") for name in ["base", "wide"]]
    comparison = compare_runs(layouts)
    assert [r.name for r in comparison.results] == ["base", "wide"]
    assert comparison.results[1].tokens_per_s == 614.4
    assert comparison.results[0].steps == 60
    assert comparison.best_runs["best_val_loss"] == (1,)
    assert comparison.config_differences == [ConfigDifference("model.d_model", (768, 960))]


def test_broken_summary_is_one_clear_error(make_run, tmp_path):
    folder = make_run("broken")
    (folder / "summary.json").write_text("{not json")
    with pytest.raises(NashError, match=r"summary.json is not valid JSON \(.*line 1.*\): delete it"):
        compare_runs([RunLayout.find(folder, tmp_path / "runs")])


def test_bits_per_byte_and_task_metrics_come_from_the_last_evaluation_that_has_them():
    records = [
        {"step": 10, "tokens": 1000, "val_loss": 3.0, "val_bpb": 1.5, "hellaswag_acc": 0.25, "hellaswag_acc_norm": 0.26},
        {"step": 20, "tokens": 2000, "val_loss": 2.9, "val_bpb": 1.4, "hellaswag_acc": 0.27, "hellaswag_acc_norm": 0.28,
         "mc_quiz_acc": 0.5},
        {"step": 30, "tokens": 3000, "val_loss": 2.8, "val_bpb": 1.3, "hellaswag_acc": 0.29, "hellaswag_acc_norm": 0.30},
        {"step": 31, "tokens": 3100, "train_loss": 2.7, "val_accuracy_note": 1.0},
    ]
    got = run_result("a", records, summary={})
    assert got.val_bpb == 1.3
    assert got.task_metrics == {"hellaswag_acc": 0.29, "hellaswag_acc_norm": 0.30, "mc_quiz_acc": 0.5}
    assert got.value("val_bpb") == 1.3 and got.value("hellaswag_acc_norm") == 0.30 and got.value("nope") is None


def test_task_metrics_are_results_lines_where_higher_is_better(make_run, tmp_path):
    make_run("small", records=[{"step": 5, "tokens": 50, "val_loss": 3.0, "val_bpb": 1.2, "hellaswag_acc_norm": 0.27}])
    make_run("large", records=[{"step": 5, "tokens": 50, "val_loss": 2.0, "val_bpb": 1.1, "hellaswag_acc_norm": 0.31,
                                "hellaswag_acc": 0.30}])
    comparison = compare_runs([RunLayout.find(name, tmp_path / "runs") for name in ["small", "large"]])
    attributes = [field.attribute for field in comparison.result_fields]
    assert attributes[-2:] == ["hellaswag_acc", "hellaswag_acc_norm"] and "val_bpb" in attributes
    assert comparison.best_runs["hellaswag_acc_norm"] == (1,) and comparison.best_runs["hellaswag_acc"] == (1,)
    assert comparison.best_runs["val_bpb"] == (1,)
