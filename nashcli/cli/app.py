"""The `nash` command group: the table of commands, global options, and error rendering.

Every user error (a NashError) is printed once here as one line with exit code 2; `--debug` shows
the traceback instead.
"""

import functools
from typing import Callable, Optional

import typer

from nashcli import __version__
from nashcli.cli.console import console, print_error
from nashcli.errors import NashError

app = typer.Typer(
    name="nash",
    help="From raw text to a trained GPT-2-style language model: prepare, train, eval, generate, plot, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

USER_ERROR_EXIT_CODE = 2


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"nash {__version__}")
        raise typer.Exit()


# Set by the global --debug option for the command that runs in this process.
_options = {"debug": False}


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of errors."),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _options["debug"] = debug


def _render_user_errors(command: Callable) -> Callable:
    """Turn a NashError into one red line and exit code 2 (the traceback only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NashError as error:
            if _options["debug"]:
                raise
            print_error(str(error))
            raise typer.Exit(code=USER_ERROR_EXIT_CODE) from None

    return wrapper


def _register_commands() -> None:
    # Imported here so that `nash --help` pays only for the modules, not for torch.
    from nashcli.cli import compare, evaluate, export, generate, plot, prepare, train

    commands: dict[str, Callable] = {
        "prepare": prepare.command,
        "train": train.command,
        "eval": evaluate.command,
        "generate": generate.command,
        "plot": plot.command,
        "compare": compare.command,
        "export": export.command,
    }
    for name, function in commands.items():
        app.command(name)(_render_user_errors(function))


_register_commands()


def main() -> None:
    app()
