"""The numbers behind `nash compare`: each run's results, the best run for each result, and the config
keys whose values differ between runs.

Results come from summary.json where the run finished (the trainer's own totals) and from the
metrics records otherwise, so a run still in progress or stopped early can be compared too.
"""

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional, Sequence

from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout
from nashcli.runs.metrics import read_metrics


@dataclass(frozen=True)
class RunResult:
    """Where one run ended up. None where the run has no such number (e.g. it never evaluated)."""

    name: str
    final_train_loss: Optional[float]
    best_val_loss: Optional[float]
    final_val_loss: Optional[float]
    val_perplexity: Optional[float]  # at the last evaluation
    val_accuracy: Optional[float]  # next-token accuracy at the last evaluation
    steps: Optional[int]
    tokens: Optional[int]
    wall_time_s: Optional[float]
    tokens_per_s: Optional[float]
    val_bpb: Optional[float] = None  # bits per byte at the last evaluation
    # Each eval task metric (train.eval_tasks, e.g. hellaswag_acc_norm) at the last evaluation that has it.
    task_metrics: dict[str, float] = field(default_factory=dict)

    def value(self, attribute: str) -> Optional[float]:
        """A result by its ResultField attribute: a field of this class, or a task metric's name."""
        if attribute in _RESULT_ATTRIBUTES:
            return getattr(self, attribute)
        return self.task_metrics.get(attribute)


@dataclass(frozen=True)
class ResultField:
    """A line of the results table; `better` says which end is best, None where neither is."""

    attribute: str
    header: str
    better: Optional[Literal["min", "max"]]


RESULT_FIELDS = (
    ResultField("final_train_loss", "final train loss", "min"),
    ResultField("best_val_loss", "best val loss", "min"),
    ResultField("final_val_loss", "final val loss", "min"),
    ResultField("val_bpb", "val bits per byte", "min"),
    ResultField("val_perplexity", "perplexity", "min"),
    ResultField("val_accuracy", "accuracy", "max"),
    # More steps, tokens or time is not better or worse in itself: these lines are context.
    ResultField("steps", "steps", None),
    ResultField("tokens", "tokens", None),
    ResultField("wall_time_s", "wall time (s)", None),
    ResultField("tokens_per_s", "tokens/s", "max"),
)


_RESULT_ATTRIBUTES = {result_field.name for result_field in fields(RunResult)} - {"name", "task_metrics"}
# The metrics train.eval_tasks logs: <task>_acc and <task>_acc_norm (accuracies: higher is better).
TASK_METRIC = re.compile(r"^[a-z0-9_]+_(acc|acc_norm)$")


def task_result_fields(results: Sequence[RunResult]) -> tuple[ResultField, ...]:
    """A results line for every task metric any of the runs has, in name order."""
    names = sorted({name for result in results for name in result.task_metrics})
    return tuple(ResultField(name, name, "max") for name in names)


@dataclass(frozen=True)
class ConfigDifference:
    """A dotted config key and its value in each run (None where a run's config lacks it)."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Comparison:
    results: list[RunResult]
    best_runs: dict[str, tuple[int, ...]]  # ResultField attribute -> indices in `results` of the best runs
    config_differences: list[ConfigDifference]
    result_fields: tuple[ResultField, ...] = RESULT_FIELDS  # the lines of the results table, task metrics included


def compare_runs(layouts: Sequence[RunLayout]) -> Comparison:
    """Results, the best run for each result and the differing config keys of the runs, in the given order."""
    results = [
        run_result(layout.name, read_metrics(layout.metrics_path), _read_summary(layout))
        for layout in layouts
    ]
    configs = [layout.read_config().model_dump(mode="json") for layout in layouts]
    result_fields = RESULT_FIELDS + task_result_fields(results)
    return Comparison(
        results=results,
        best_runs=best_runs(results, result_fields),
        config_differences=config_differences(configs),
        result_fields=result_fields,
    )


def run_result(name: str, records: Sequence[dict], summary: dict) -> RunResult:
    """One run's results: summary.json values where present, else derived from its metrics records."""
    train = [record for record in records if record.get("train_loss") is not None]
    evals = [record for record in records if record.get("val_loss") is not None]
    last = records[-1] if records else {}
    derived = {
        "final_train_loss": train[-1]["train_loss"] if train else None,
        "best_val_loss": min(record["val_loss"] for record in evals) if evals else None,
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "val_perplexity": evals[-1].get("val_perplexity") if evals else None,
        "val_accuracy": evals[-1].get("val_accuracy") if evals else None,
        "val_bpb": evals[-1].get("val_bpb") if evals else None,
        "steps": last.get("step"),
        "tokens": last.get("tokens"),
        "wall_time_s": last.get("elapsed_s"),
        "tokens_per_s": (last["tokens"] / last["elapsed_s"]) if last.get("tokens") and last.get("elapsed_s") else None,
    }
    values = {
        field.name: summary[field.name] if summary.get(field.name) is not None else derived[field.name]
        for field in fields(RunResult)
        if field.name not in ("name", "task_metrics")
    }
    task_metrics = {
        key: value for record in records for key, value in record.items() if TASK_METRIC.match(key) and value is not None
    }  # later records overwrite earlier ones: the last evaluation's values
    return RunResult(name=name, **values, task_metrics=task_metrics)


def best_runs(
    results: Sequence[RunResult], result_fields: Sequence[ResultField] = RESULT_FIELDS
) -> dict[str, tuple[int, ...]]:
    """For each result with a better end, the indices of the runs holding the best value (all, on ties).

    Runs without the value are skipped; a result no run has is left out.
    """
    best = {}
    for field in result_fields:
        values = {index: result.value(field.attribute) for index, result in enumerate(results)}
        values = {index: value for index, value in values.items() if value is not None}
        if field.better is None or not values:
            continue
        best_value = min(values.values()) if field.better == "min" else max(values.values())
        best[field.attribute] = tuple(index for index, value in values.items() if value == best_value)
    return best


def flatten_config(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config sections as dotted keys: {"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}.

    Lists (e.g. train.betas) stay whole values: they are one setting.
    """
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def config_differences(configs: Sequence[dict]) -> list[ConfigDifference]:
    """The dotted keys whose values are not the same in every config, sorted by key.

    The top-level `name` is left out: the results table already names each run.
    """
    flat = [flatten_config(config) for config in configs]
    keys = sorted({key for config in flat for key in config} - {"name"})
    differences = []
    for key in keys:
        values = tuple(config.get(key) for config in flat)
        if any(value != values[0] for value in values[1:]):
            differences.append(ConfigDifference(key=key, values=values))
    return differences


def _read_summary(layout: RunLayout) -> dict:
    # No summary.json yet means the run is still going or stopped early: results come from metrics.
    if not layout.summary_path.is_file():
        return {}
    try:
        summary = json.loads(layout.summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NashError(f"{layout.summary_path} is not valid JSON ({error}): delete it to use metrics.jsonl") from None
    numeric = [field.name for field in fields(RunResult) if field.name not in ("name", "task_metrics")]
    if not isinstance(summary, dict) or not all(
        summary.get(key) is None or (isinstance(summary[key], (int, float)) and not isinstance(summary[key], bool))
        for key in numeric
    ):
        raise NashError(f"{layout.summary_path} is not a run summary (an object of numbers): delete it to use metrics.jsonl")
    return summary

