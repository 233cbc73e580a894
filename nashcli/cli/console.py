"""Terminal output shared by every command: consoles, error lines, progress bars and tables.

With nashcli/cli/*, the only code that imports rich. Progress bars fall back to plain output when
stdout is not a terminal (CI logs, pipes), because rich's Console detects that by itself.
"""

from typing import Any, Iterable, Optional, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """The one-line form of every user error: `error: <what is wrong and how to fix it>`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, emoji=False)


def make_progress(*extra_columns: Any, total_known: bool = True, quiet: bool = False) -> Progress:
    """A progress bar with description, bar, count, elapsed and ETA; extra columns go before the ETA.

    An extra column is a rich column or a template string such as "{task.fields[loss]} loss".
    """
    columns: list[Any] = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if total_known:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(column) if isinstance(column, str) else column for column in extra_columns]
    columns.append(TimeElapsedColumn())
    if total_known:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=False, disable=quiet)


def make_table(
    title: Optional[str],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    highlight: Optional[dict[tuple[int, int], str]] = None,
) -> Table:
    """A results table; `highlight[(row, col)] = style` marks chosen cells (e.g. the best value)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row_index, row in enumerate(rows):
        cells = []
        for col_index, value in enumerate(row):
            text = format_value(value)
            style = (highlight or {}).get((row_index, col_index))
            cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(*cells)
    return table


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
