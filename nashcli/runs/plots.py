"""Figures of training curves: one panel per metric, one colour per run.

A run's curves are its metric records: the lines of a run folder's metrics.jsonl, or the rows of a
wandb run's history. Per-step training metrics (train loss) are noisy from minibatch to minibatch, so
they are drawn smoothed by an exponential moving average with the raw curve faint behind it.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot): no display is needed and no global
figure state is left behind.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, LogFormatter

from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout
from nashcli.runs.metrics import read_metrics

X_AXES = ("step", "tokens")
DEFAULT_METRICS = ("train_loss", "val_loss")
PANELS_PER_ROW = 3
MAX_POINTS_WITH_MARKERS = 20


@dataclass(frozen=True)
class RunCurves:
    """The metric records of one run, under the label its curves get in a legend."""

    label: str
    records: list[dict]

    def metrics(self) -> list[str]:
        """Sorted names of the numeric metrics in any record (x-axis keys and wandb's `_` keys excluded)."""
        names = {
            key
            for record in self.records
            for key, value in record.items()
            if key not in X_AXES and not key.startswith("_") and _is_number(value)
        }
        return sorted(names)

    def series(self, metric: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
        """(x values, metric values) of the records that hold both, in record order."""
        points = [
            (record[x], record[metric])
            for record in self.records
            if _is_number(record.get(x)) and _is_number(record.get(metric))
        ]
        xs, ys = zip(*points) if points else ((), ())
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def load_run_curves(layout: RunLayout) -> RunCurves:
    """The curves of a local run, labelled with its folder name."""
    return RunCurves(label=layout.name, records=read_metrics(layout.metrics_path))


def load_wandb_curves(run_path: str, samples: int = 2000) -> RunCurves:
    """The curves of a wandb run `ENTITY/PROJECT/RUN_ID`, read through the wandb API (needs access).

    wandb samples long histories down to `samples` rows, which is plenty for a figure.
    """
    if run_path.count("/") != 2 or "" in run_path.split("/"):
        raise NashError(f"--wandb takes ENTITY/PROJECT/RUN_ID, got {run_path!r}")
    import wandb

    try:
        run = wandb.Api().run(run_path)
        rows = run.history(samples=samples, pandas=False)
        label = run.name or run_path
    # The client raises its own errors for auth and missing runs, and requests' (OSError) for the network.
    except (wandb.errors.Error, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NashError(
            f"could not read wandb run {run_path!r}: {reason} (check the path, `wandb login` and the network)"
        ) from error
    # nash logs `step` itself; a run logged by other code may only have wandb's own `_step`.
    records = [{"step": row.get("_step"), **row} for row in rows]
    return RunCurves(label=label, records=records)


def ema_smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """Exponential moving average, debiased so the first points are not pulled towards zero.

    s_t = weight * s_{t-1} + (1 - weight) * v_t with s_{-1} = 0, returned as s_t / (1 - weight^(t+1))
    (TensorBoard's smoothing). weight 0 returns the values unchanged.

    >>> ema_smooth([0.0, 1.0], 0.5).round(4).tolist()
    [0.0, 0.6667]
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    smoothed = np.empty(len(values), dtype=np.float64)
    running = 0.0
    for index, value in enumerate(values):
        running = weight * running + (1.0 - weight) * value
        smoothed[index] = running / (1.0 - weight ** (index + 1))
    return smoothed


def auto_smoothing_weight(num_points: int) -> float:
    """An EMA weight whose window (1 / (1 - weight) points) is about 1/20 of the curve, at most 100.

    A fixed weight either barely smooths a long run or flattens a short one: 20 points get 0,
    30 points 0.33, 300 points 0.93, 2,000 points and more 0.99. A longer window would lag
    visibly behind the steep start of a loss curve.
    """
    window = max(1.0, num_points / 20)
    return min(0.99, 1.0 - 1.0 / window)


def parse_metric_names(text: Optional[str]) -> Optional[list[str]]:
    """`--metrics train_loss, val_loss` -> ["train_loss", "val_loss"]; None or blank -> None (the defaults)."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    return names or None


def choose_metrics(runs: Sequence[RunCurves], requested: Optional[Sequence[str]]) -> list[str]:
    """The metrics to draw: all `requested` ones (each run must have them), else the defaults found.

    Raises NashError naming the metrics a run has when it lacks one that was asked for.
    """
    if requested:
        for run in runs:
            missing = [metric for metric in requested if metric not in run.metrics()]
            if missing:
                raise NashError(
                    f"run {run.label!r} has no metric {missing[0]!r}; it has: {', '.join(run.metrics()) or 'none'}"
                )
        return list(requested)
    found = [metric for metric in DEFAULT_METRICS if any(metric in run.metrics() for run in runs)]
    if not found:
        available = sorted({metric for run in runs for metric in run.metrics()})
        raise NashError(
            f"no {' or '.join(DEFAULT_METRICS)} in {', '.join(run.label for run in runs)}; "
            f"pick with --metrics from: {', '.join(available) or 'none (no metrics logged yet)'}"
        )
    return found


def plot_runs(
    runs: Sequence[RunCurves],
    metrics: Sequence[str],
    out: Path,
    x: str = "step",
    smoothing: Optional[float] = None,
    log_y: bool = False,
) -> Path:
    """Draw one panel per metric with every run overlaid and save a PNG at `out`; returns `out`.

    `smoothing` is the EMA weight for per-step training metrics (None picks one from the number
    of points); `log_y` puts the metric axes on a log scale.
    """
    if x not in X_AXES:
        raise NashError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    for run in runs:
        if not any(_is_number(record.get(x)) for record in run.records):
            raise NashError(f"run {run.label!r} has no {x!r} in its metrics; use --x step")

    num_rows = math.ceil(len(metrics) / PANELS_PER_ROW)
    num_cols = min(len(metrics), PANELS_PER_ROW)
    figure = Figure(figsize=(5.5 * num_cols, 4.0 * num_rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(num_rows, num_cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        _draw_panel(ax, runs, metric, x, smoothing, log_y)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    figure.suptitle(" vs ".join(run.label for run in runs), fontweight="bold")

    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out


def _draw_panel(ax, runs: Sequence[RunCurves], metric: str, x: str, smoothing: Optional[float], log_y: bool) -> None:
    colors = [f"C{index % 10}" for index in range(len(runs))]
    weights_used = set()
    for color, run in zip(colors, runs):
        xs, ys = run.series(metric, x)
        if len(xs) == 0:
            continue
        if is_noisy_metric(metric) and len(ys) > 2:
            weight = auto_smoothing_weight(len(ys)) if smoothing is None else smoothing
            weights_used.add(round(weight, 2))
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=1)
            ax.plot(xs, ema_smooth(ys, weight), color=color, linewidth=2, label=run.label)
        else:
            # Evaluations are few: markers show where they were taken.
            marker = "o" if len(xs) <= MAX_POINTS_WITH_MARKERS else None
            ax.plot(xs, ys, color=color, linewidth=2, marker=marker, markersize=3.5, label=run.label)
    note = f" (EMA {', '.join(str(w) for w in sorted(weights_used))}; raw faint)" if weights_used else ""
    ax.set_title(metric + note)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
        # Plain numbers (2, 3, 4) read better than 2x10^0 on a loss axis spanning less than a decade.
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    if x == "tokens":
        ax.xaxis.set_major_formatter(EngFormatter())
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def is_noisy_metric(metric: str) -> bool:
    """Metrics measured on the one step that gets logged (train_loss, train/loss, grad_norm): the noisy ones."""
    name = metric.replace("/", "_")
    return name.startswith("train_") or name.endswith("grad_norm")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
