"""`nash train`: resolve the config, then hand it to the engine."""

from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from nashcli.cli.console import console, make_table
from nashcli.config import NashConfig, override_config, resolve_config
from nashcli.engine.stop import interrupted_exit_code
from nashcli.errors import NashError


def command(
    preset: Annotated[
        Optional[str],
        typer.Option("--preset", "-p", help="Preset name (tiny, small, gpt2-124m, sft) or a path to a YAML file."),
    ] = None,
    overrides: Annotated[
        list[str],
        typer.Option(
            "--set", "-s", help="Override a config key by dotted path, e.g. --set train.lr=1e-4 (repeatable)."
        ),
    ] = [],
    run: Annotated[
        Optional[str], typer.Option("--run", help="Run name (folder under runs/); same as --set name=...")
    ] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", help="Resume the run in this folder from its last checkpoint, exactly."),
    ] = None,
    init_from: Annotated[
        Optional[str],
        typer.Option("--init-from", help="Start from these weights: a run folder, a checkpoint, or hf:PATH_OR_ID."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run folder of the same name.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config and parameter count, then exit.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No live display; only errors and the final summary.")
    ] = False,
) -> None:
    """Pretrain or fine-tune a GPT.

    Runs under torchrun too (DDP): torchrun --nproc_per_node=2 -m nashcli train --preset small.
    Ctrl-C saves a checkpoint and stops; --resume continues exactly where it stopped.

    Example: nash train --preset small --set train.lr=1e-4 --set model.dropout=0
    """
    options = {"--run": ("name", run), "--init-from": ("init_from", init_from)}
    resume_point = None
    if resume is not None:
        if preset or run or init_from:
            raise NashError(
                "--resume continues a run with its own config: drop --preset/--run/--init-from "
                "(use --set to change values)"
            )
        from nashcli.engine.locate import find_resume

        resume_point = find_resume(resume)
        base = resume_point.config.model_dump(mode="json")
        config = override_config(base, overrides, source=str(resume_point.checkpoint_dir))
    else:
        config = resolve_config(preset, overrides, options)
    if dry_run:
        print_resolved_config(config)
        return
    from nashcli.cli.training_display import TrainingDisplay
    from nashcli.engine.trainer import train

    display = TrainingDisplay(quiet=quiet, log_interval=config.metrics.log_interval)
    try:
        summary = train(config, resume=resume_point, reporter=display, overwrite=overwrite, name_prefix=preset)
    finally:
        display.close()
    if summary.interrupted:
        # Not 0: `nash train ... && nash eval ...` and schedulers must not take a stopped run for a finished one.
        raise typer.Exit(code=interrupted_exit_code(summary.stop_signal))


def print_resolved_config(config: NashConfig) -> None:
    from nashcli.model.gpt import count_parameters

    console.print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip())
    console.print(
        make_table(
            None,
            ["", "value"],
            [
                ["parameters", count_parameters(config.model)],
                ["tokens per step (one process)", config.tokens_per_step],
            ],
        )
    )
