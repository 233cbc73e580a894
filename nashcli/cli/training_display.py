"""The live view of `nash train`: the trainer's reporter, rendered with rich.

On a terminal: a header, a progress bar (step, loss, lr, tokens/s, MFU, ETA; under a time budget
the time left instead of the bar and ETA) and a line per evaluation. Not on a terminal (CI logs,
pipes): the same facts as plain lines every log interval. Quiet: only the final summary.
"""

from pathlib import Path
from typing import Optional

from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from nashcli.cli.console import console, format_value, make_progress
from nashcli.engine.records import EvalRecord, RunStart, RunSummary, StepRecord


class TrainingDisplay:
    """Implements nashcli.engine.reporter.Reporter."""

    def __init__(self, *, quiet: bool = False, log_interval: int = 10):
        self.quiet = quiet
        self.log_interval = log_interval
        self.live = console.is_terminal and not quiet
        self.progress: Optional[Progress] = None
        self.task = None
        self.max_steps = 0
        self.budget_s: Optional[float] = None  # train.max_minutes in seconds

    def on_start(self, info: RunStart) -> None:
        self.max_steps = info.max_steps
        self.budget_s = None if info.max_minutes is None else info.max_minutes * 60
        if self.quiet:
            return
        world = info.world_size
        batch = (
            f"{info.batch_size} seq x {info.grad_accum_steps} accum"
            + (f" x {world} processes" if world > 1 else "")
            + f" x {info.seq_len} tokens = {info.tokens_per_step:,} tokens/step"
        )
        rows = [
            ["run", info.run_dir],
            ["data", info.data],
            ["model", f"{info.parameters:,} parameters"],
            ["device", f"{info.device} ({world} process{'es' if world > 1 else ''}), {info.precision}"],
            ["batch", batch],
            ["steps", f"{info.start_step:,} -> {'at most ' if self.budget_s is not None else ''}{info.max_steps:,}"],
        ]
        if self.budget_s is not None:
            left_s = max(0.0, self.budget_s - info.elapsed_s)
            rows.append(["time budget", f"{info.max_minutes:g} min ({_duration(left_s)} left)"])
        console.print(_facts_table(None, rows))
        for note in info.notes:
            console.print(Text(note, style="dim"))
        if info.sft_preview is not None:
            _print_sft_preview(info.sft_preview)
        if self.live:
            budgeted = self.budget_s is not None
            # Under a budget the steps' total is only a cap: the bar and its ETA would mislead.
            self.progress = make_progress(
                *(["step {task.fields[step]}"] if budgeted else []),
                "loss [bold]{task.fields[loss]}",
                "lr {task.fields[lr]}",
                "{task.fields[speed]} tok/s",
                "MFU {task.fields[mfu]}",
                *(["[bold]{task.fields[left]}[/] left"] if budgeted else []),
                total_known=not budgeted,
            )
            self.task = self.progress.add_task(
                "train",
                total=info.max_steps,
                completed=info.start_step,
                **dict.fromkeys(("step", "loss", "lr", "speed", "mfu", "left"), "-"),
            )
            self.progress.start()

    def on_step(self, metrics: StepRecord) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=metrics.step,
                step=f"{metrics.step:,}",
                loss=f"{metrics.train_loss:.4f}",
                lr=f"{metrics.lr:.2e}",
                speed=f"{metrics.tokens_per_s:,.0f}",
                mfu=f"{metrics.mfu:.1%}",
                left=self._time_left(metrics),
            )
        elif not self.quiet and (metrics.step % self.log_interval == 0 or metrics.step == self.max_steps):
            steps = f"step {metrics.step}" + ("" if self.budget_s is not None else f"/{self.max_steps}")
            left = f", {self._time_left(metrics)} left" if self.budget_s is not None else ""
            console.print(
                f"{steps}  loss {metrics.train_loss:.4f}  lr {metrics.lr:.2e}  "
                f"{metrics.tokens_per_s:,.0f} tok/s  MFU {metrics.mfu:.1%}  {metrics.elapsed_s:.0f}s{left}",
                highlight=False,
            )

    def on_eval(self, metrics: EvalRecord) -> None:
        if self.quiet:
            return
        best = "  [bold green]best[/]" if metrics.is_best else ""
        tasks = "".join(f"  {name} {value:.1%}" for name, value in metrics.task_metrics.items())
        self._print(
            f"eval step {metrics.step}: val loss [bold]{metrics.val_loss:.4f}[/]  bpb {metrics.val_bpb:.4f}  "
            f"perplexity {format_value(metrics.val_perplexity)}  accuracy {metrics.val_accuracy:.1%}{tasks}{best}"
        )

    def on_checkpoint(self, path: Path) -> None:
        if not self.quiet:
            self._print(f"[dim]saved {path}[/]")

    def on_end(self, summary: RunSummary) -> None:
        self.close()
        rows = [
            ["steps", summary.steps],
            ["tokens", summary.tokens],
            ["final train loss", summary.final_train_loss],
            ["final val loss", summary.final_val_loss],
            ["best val loss", summary.best_val_loss],
            ["tokens/s", summary.tokens_per_s],
            ["MFU", f"{summary.mfu:.1%}"],
            ["wall time", f"{summary.wall_time_s:.1f} s"],
        ]
        console.print(_facts_table(f"run {summary.run_dir}", rows))
        if summary.interrupted:
            console.print(f"stopped at step {summary.steps}; continue with: [bold]{summary.resume_command}[/]")

    def close(self) -> None:
        """Stop the live bar (also on errors, so the terminal is left clean)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _time_left(self, metrics: StepRecord) -> str:
        return "-" if self.budget_s is None else _duration(max(0.0, self.budget_s - metrics.elapsed_s))

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else console).print(text)


def _duration(seconds: float) -> str:
    """1m05s, or 42s under a minute."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _facts_table(title: Optional[str], rows: list[list]) -> Table:
    """Two columns, names and values, without a header row."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, format_value(value))
    return table


def _print_sft_preview(preview: dict) -> None:
    """One training example with the tokens that carry loss highlighted, and the example counts."""
    console.print(
        f"SFT: {preview['examples']:,} examples kept, {preview['truncated']:,} truncated (prompt start dropped), "
        f"{preview['skipped']:,} skipped. One example, [dim]prompt (no loss)[/] and [bold green]trained tokens[/]:"
    )
    console.print(Text.assemble((preview["prompt"], "dim"), (preview["completion"], "bold green")))
