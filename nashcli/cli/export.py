"""`nash export`: write a run's weights in another library's format."""

from pathlib import Path
from typing import Annotated

import typer

from nashcli.cli.console import console
from nashcli.cli.model_options import CheckpointOption
from nashcli.errors import NashError


def command(
    source: Annotated[str, typer.Argument(help="A run folder or name, or a checkpoint folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (created; must be empty if it exists).")],
    format: Annotated[
        str, typer.Option("--format", help="hf: Hugging Face GPT-2 (config.json + model.safetensors).")
    ] = "hf",
    checkpoint: CheckpointOption = "best",
) -> None:
    """Export weights so other tools load them: `transformers.GPT2LMHeadModel.from_pretrained(OUT)`.

    Example: nash export runs/demo --format hf --out exported/demo
    """
    from nashcli.engine.loading import load_model
    from nashcli.model.hf import export_hf

    if format != "hf":
        raise NashError(f"unknown export format {format!r}: the supported format is hf")
    if out.exists() and any(out.iterdir()):
        raise NashError(f"{out} is not empty: choose a new --out folder")
    model, _ = load_model(source, checkpoint=checkpoint, device="cpu")
    export_hf(model, out)
    console.print(f"wrote Hugging Face GPT-2 weights to [bold]{out}[/]")
