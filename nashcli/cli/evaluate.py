"""`nash eval`: how good is a model on validation data."""

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from nashcli.cli.console import console, err_console, make_progress, make_table
from nashcli.cli.model_options import DeviceOption, SourceArgument
from nashcli.errors import NashError


def command(
    source: SourceArgument,
    checkpoint: Annotated[
        Optional[str],
        typer.Option("--checkpoint", help="Which checkpoint of a run: best or last (default: best if it exists)."),
    ] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="Another prepared dataset (name or folder).")] = None,
    split: Annotated[str, typer.Option("--split", help="val or train.")] = "val",
    max_batches: Annotated[
        Optional[int],
        typer.Option("--max-batches", min=1, help="Batches to evaluate (default: the run's train.eval_batches)."),
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", min=1, help="Sequences per batch.")
    ] = None,
    precision: Annotated[
        Optional[str],
        typer.Option("--precision", help="fp32, bf16, fp16 or auto (default: the run's own train.precision)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    device: DeviceOption = "auto",
    task: Annotated[
        Optional[str],
        typer.Option("--task", help="Score a task instead: hellaswag, or mc:PATH (your own multiple-choice jsonl)."),
    ] = None,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=1, help="With --task: score only the first N examples.")
    ] = None,
    task_file: Annotated[
        Optional[Path],
        typer.Option("--task-file", help="With --task hellaswag: a local copy of hellaswag_val.jsonl (no download)."),
    ] = None,
) -> None:
    """Evaluate a model: loss, bits per byte, perplexity and next-token accuracy over the split's
    target tokens; or, with --task, a task's accuracy (acc: lowest summed loss, acc_norm: lowest
    mean loss per token of an ending, as llm.c scores HellaSwag).

    The batches are fixed, so the same checkpoint and data always give the same numbers. HellaSwag
    is downloaded once into ~/.cache/nash (or $NASH_CACHE_DIR).

    Example: nash eval runs/demo --max-batches 50 --json
    Example: nash eval hf:gpt2 --task hellaswag --limit 500
    """
    from nashcli.engine.loading import EvalRequest, prepare_evaluation

    if task is not None:
        if data is not None or max_batches is not None or batch_size is not None or split != "val":
            raise NashError("--task scores a task, not a dataset: drop --data, --split, --max-batches and --batch-size")
        return _evaluate_task(source, task, checkpoint, limit, task_file, precision, device, as_json)
    if limit is not None or task_file is not None:
        raise NashError("--limit and --task-file go with --task: add --task hellaswag (or mc:PATH)")
    evaluation = prepare_evaluation(EvalRequest(source, checkpoint, data, split, max_batches, batch_size, precision, device))
    err_console.print(f"evaluating on {evaluation.description}", style="dim", markup=False, soft_wrap=True)
    with make_progress(quiet=as_json) as progress:
        bar = progress.add_task("evaluating", total=evaluation.num_batches)
        results = evaluation.run(on_batch=lambda done: progress.update(bar, completed=done))
    if as_json:
        print(json.dumps(results))
        return
    rows = [[name, results[name]] for name in ("val_loss", "val_bpb", "perplexity", "accuracy", "tokens", "bytes")]
    console.print(make_table(f"{source} ({split})", ["metric", "value"], rows))


def _evaluate_task(source, task, checkpoint, limit, task_file, precision, device, as_json) -> None:
    from nashcli.engine.loading import TaskEvalRequest, prepare_task_evaluation

    request = TaskEvalRequest(source, task, checkpoint, limit, task_file, precision, device)
    with make_progress(quiet=as_json) as progress:
        download = None

        def on_download(done: int, total: Optional[int]) -> None:
            nonlocal download
            if download is None:
                download = progress.add_task(f"downloading {task}", total=total)
            progress.update(download, completed=done, total=total)

        evaluation = prepare_task_evaluation(request, on_download=on_download)
        err_console.print(f"scoring {evaluation.description}", style="dim", markup=False, soft_wrap=True)
        scoring = progress.add_task(f"scoring {evaluation.task.name}", total=evaluation.num_examples)
        results = evaluation.run(on_progress=lambda done: progress.update(scoring, completed=done))
    if as_json:
        print(json.dumps(results))
        return
    rows = [[name, value] for name, value in results.items() if name != "task"]
    console.print(make_table(f"{source}: {results['task']}", ["metric", "value"], rows))
