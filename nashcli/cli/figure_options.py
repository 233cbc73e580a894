"""The options `nash plot` and `nash compare` share, with their help written once."""

from pathlib import Path
from typing import Annotated, Optional

import typer

MetricsOption = Annotated[
    Optional[str],
    typer.Option("--metrics", "-m", help="Comma-separated metrics, one panel each [default: train_loss,val_loss]."),
]
XAxisOption = Annotated[str, typer.Option("--x", help="X axis: step or tokens.")]
RunsDirOption = Annotated[Path, typer.Option("--runs-dir", help="Where run names are looked up.")]
LogYOption = Annotated[bool, typer.Option("--log-y", help="Log scale on the metric axes.")]
