"""`nash compare`: overlaid curves, a results table with the best values marked, and the config
keys that differ between the runs."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from nashcli.cli.console import console, make_table
from nashcli.cli.figure_options import LogYOption, MetricsOption, RunsDirOption, XAxisOption
from nashcli.errors import NashError
from nashcli.runs.compare import Comparison, compare_runs
from nashcli.runs.layout import RunLayout

BEST_STYLE = "bold green"


def command(
    runs: Annotated[list[str], typer.Argument(help="Two or more run folders, or run names under --runs-dir.")],
    metrics: MetricsOption = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="PNG to write [default: compare.png in the first run].")
    ] = None,
    x: XAxisOption = "step",
    runs_dir: RunsDirOption = Path("runs"),
    log_y: LogYOption = False,
) -> None:
    """Compare runs: overlaid curves, a results table and the config keys that differ.

    Example: nash compare tiny tiny-lr3e-3 --x tokens
    """
    # Imported here so that `nash --help` does not pay for matplotlib.
    from nashcli.runs.plots import choose_metrics, load_run_curves, parse_metric_names, plot_runs

    if len(runs) < 2:
        raise NashError("nash compare needs two or more runs; for one run use `nash plot`")
    layouts = [RunLayout.find(run, runs_dir) for run in runs]
    comparison = compare_runs(layouts)
    curves = [load_run_curves(layout) for layout in layouts]
    out = out or layouts[0].root / "compare.png"
    figure = plot_runs(curves, choose_metrics(curves, parse_metric_names(metrics)), out, x=x, log_y=log_y)
    console.print(results_table(comparison))
    console.print(differences_table(comparison))
    console.print(f"figure: {figure}")


def results_table(comparison: Comparison):
    """One line per result, one column per run; the best run's value of each result is highlighted."""
    columns = ["result", *(result.name for result in comparison.results)]
    result_fields = comparison.result_fields  # RESULT_FIELDS, then the runs' task metrics
    rows = [[field.header, *(result.value(field.attribute) for result in comparison.results)] for field in result_fields]
    # Column 0 holds the result's name, so run i is table column i + 1.
    highlight = {
        (row, run + 1): BEST_STYLE
        for row, field in enumerate(result_fields)
        for run in comparison.best_runs.get(field.attribute, ())
    }
    return make_table("results (best value of each line highlighted)", columns, rows, highlight)


def differences_table(comparison: Comparison):
    """One line per config key whose value differs, one column per run."""
    if not comparison.config_differences:
        return "config: the same in every run (apart from the name)"
    columns = ["config key", *(result.name for result in comparison.results)]
    rows = [[difference.key, *difference.values] for difference in comparison.config_differences]
    return make_table("config keys that differ", columns, rows)
