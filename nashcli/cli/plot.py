"""`nash plot`: draw a run's curves (or several runs', overlaid) to a PNG and print its path."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from nashcli.cli.console import console
from nashcli.cli.figure_options import LogYOption, MetricsOption, RunsDirOption, XAxisOption
from nashcli.errors import NashError
from nashcli.runs.layout import RunLayout


def command(
    runs: Annotated[Optional[list[str]], typer.Argument(help="Run folders, or run names under --runs-dir.")] = None,
    metrics: MetricsOption = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="PNG to write [default: plot.png in the first run].")
    ] = None,
    x: XAxisOption = "step",
    wandb_run: Annotated[
        Optional[str],
        typer.Option("--wandb", help="Plot a wandb run instead: ENTITY/PROJECT/RUN_ID (needs access to it)."),
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    smoothing: Annotated[
        Optional[float],
        typer.Option(
            "--smoothing", min=0.0, max=0.99, help="EMA weight for train curves [default: from the curve length]."
        ),
    ] = None,
    log_y: LogYOption = False,
) -> None:
    """Plot a run's metrics to a PNG: one panel per metric, train loss smoothed over the raw curve.

    Example: nash plot runs/tiny --metrics train_loss,val_loss,lr --x tokens
    """
    # Imported here so that `nash --help` does not pay for matplotlib.
    from nashcli.runs.plots import choose_metrics, load_run_curves, load_wandb_curves, parse_metric_names, plot_runs

    if not runs and not wandb_run:
        raise NashError("name a run folder (nash plot runs/NAME) or a wandb run (--wandb ENTITY/PROJECT/RUN_ID)")
    layouts = [RunLayout.find(run, runs_dir) for run in runs or []]
    curves = [load_run_curves(layout) for layout in layouts]
    if wandb_run:
        curves.append(load_wandb_curves(wandb_run))
    if out is None:
        out = layouts[0].root / "plot.png" if layouts else Path(f"wandb-{wandb_run.split('/')[-1]}.png")
    chosen = choose_metrics(curves, parse_metric_names(metrics))
    console.print(str(plot_runs(curves, chosen, out, x=x, smoothing=smoothing, log_y=log_y)))
