"""`nash eval`: how good is a model on validation data."""

import json
from typing import Annotated, Optional

import typer

from nashcli.cli.console import console, err_console, make_progress, make_table


def command(
    source: Annotated[str, typer.Argument(help="A run folder or name, a checkpoint folder, or hf:PATH_OR_ID.")],
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
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """Evaluate a model: loss, perplexity and next-token accuracy over the split's target tokens.

    The batches are fixed, so the same checkpoint and data always give the same numbers.

    Example: nash eval runs/demo --max-batches 50 --json
    """
    from nashcli.engine.loading import EvalRequest, prepare_evaluation

    evaluation = prepare_evaluation(EvalRequest(source, checkpoint, data, split, max_batches, batch_size, precision, device))
    err_console.print(f"evaluating on {evaluation.description}", style="dim", markup=False, soft_wrap=True)
    with make_progress(quiet=as_json) as progress:
        task = progress.add_task("evaluating", total=evaluation.num_batches)
        results = evaluation.run(on_batch=lambda done: progress.update(task, completed=done))
    if as_json:
        print(json.dumps(results))
        return
    rows = [[name, results[name]] for name in ("val_loss", "perplexity", "accuracy", "tokens")]
    console.print(make_table(f"{source} ({split})", ["metric", "value"], rows))
