"""Options of the commands that load a model (eval, generate, chat, export), with their help written once."""

from typing import Annotated, Optional

import typer

SourceArgument = Annotated[str, typer.Argument(help="A run folder or name, a checkpoint folder, or hf:PATH_OR_ID.")]
TemperatureOption = Annotated[float, typer.Option("--temperature", min=0.0, help="0 is greedy decoding.")]
TopKOption = Annotated[Optional[int], typer.Option("--top-k", min=1, help="Sample only from the k likeliest tokens.")]
TopPOption = Annotated[
    Optional[float],
    typer.Option("--top-p", min=0.0, max=1.0, help="Sample from the smallest set of tokens whose probability reaches p."),
]
SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Makes sampling reproducible.")]
CheckpointOption = Annotated[str, typer.Option("--checkpoint", help="Which checkpoint of a run: best or last.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
