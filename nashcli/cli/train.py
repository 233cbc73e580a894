"""`nash train`: resolve the config, then hand it to the engine (one process, or --devices N)."""

from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from nashcli.cli.console import console, err_console, make_table, print_error
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
    devices: Annotated[
        Optional[str],
        typer.Option(
            "--devices",
            help="Training processes on this machine, one per GPU: N, or auto (every GPU; 1 process on a CPU). "
            "The global batch is N x nodes x train.batch_size x train.grad_accum_steps.",
        ),
    ] = None,
    nodes: Annotated[
        int, typer.Option("--nodes", help="Machines taking part, each running this command with its --node-rank.")
    ] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This machine's rank among --nodes: 0 to nodes-1.")] = 0,
    master_addr: Annotated[
        Optional[str], typer.Option("--master-addr", help="With --nodes: the address of node 0, reachable from all.")
    ] = None,
    master_port: Annotated[
        Optional[int], typer.Option("--master-port", help="With --nodes: a free TCP port on node 0 (default 29500).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved config and parameter count, then exit.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No live display; only errors and the final summary.")
    ] = False,
) -> None:
    """Pretrain or fine-tune a GPT.

    Several GPUs (or CPU processes): nash train --devices 4 --preset gpt2-124m. Several machines: the
    same command on each, with --nodes 2 --node-rank 0|1 --master-addr NODE0_HOST. torchrun works
    too: torchrun --nproc_per_node=2 -m nashcli train --set name=NAME (torchrun takes --run for its
    own --run-path: name the run with --set name=).
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
    plan = None
    if devices is not None or nodes > 1:
        from nashcli.engine.launch import plan_processes

        plan = plan_processes(devices or "auto", config.train.device, nodes, node_rank, master_addr, master_port)
    if dry_run:
        print_resolved_config(config, plan.world_size if plan else 1)
        return
    from nashcli.cli.training_display import TrainingDisplay

    display = TrainingDisplay(quiet=quiet, log_interval=config.metrics.log_interval)
    try:
        if plan is not None and plan.world_size > 1:
            summary = _launch(config, resume_point, overwrite, preset, plan, display)
        else:
            from nashcli.engine.trainer import train

            summary = train(config, resume=resume_point, reporter=display, overwrite=overwrite, name_prefix=preset)
    finally:
        display.close()
    if summary is not None and summary.interrupted:
        # Not 0: `nash train ... && nash eval ...` and schedulers must not take a stopped run for a finished one.
        raise typer.Exit(code=interrupted_exit_code(summary.stop_signal))


def _launch(config, resume_point, overwrite, preset, plan, display):
    """Train in plan.world_size processes; a crash of one is one line (after its own traceback, if it had one)."""
    from nashcli.engine.launch import TrainingJob, TrainingProcessFailed, launch_training

    job = TrainingJob(config, resume=resume_point, overwrite=overwrite, name_prefix=preset)
    try:
        return launch_training(job, plan, display)
    except TrainingProcessFailed as failed:
        display.close()
        if failed.traceback_text:
            err_console.print(failed.traceback_text.rstrip(), markup=False, highlight=False)
        print_error(str(failed))
        raise typer.Exit(code=failed.exit_code) from None


def print_resolved_config(config: NashConfig, processes: int = 1) -> None:
    from nashcli.model.gpt import count_parameters

    console.print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip())
    rows = [["parameters", count_parameters(config.model)], ["tokens per step (one process)", config.tokens_per_step]]
    if processes > 1:
        rows.append([f"tokens per step ({processes} processes)", config.tokens_per_step * processes])
    console.print(make_table(None, ["", "value"], rows))
