"""The `nash` command group: the table of commands, global options, and error rendering.

Every user error (a NashError, a file system error, a usage error) is printed once here as one line
with exit code 2; `--debug` shows the traceback of the first two instead.
"""

import errno
import functools
import inspect
import signal
import sys
from typing import Annotated, Callable, Optional

import typer
import typer.core

from nashcli import __version__
from nashcli.cli.console import console, print_error
from nashcli.errors import NashError

# typer raises click's exceptions (its own copy of click): the base class of a usage error.
_ClickException = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "ClickException")


class _OneLineUsageErrors(typer.core.TyperGroup):
    """A usage error (an unknown option, an impossible value) is one `error:` line like any other,
    not click's usage text and box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _ClickException as error:
            context = getattr(error, "ctx", None)
            if type(error).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                command = context.command_path if context is not None else "nash"
                print_error(f"{command}: {error.format_message()} (see {command} --help)")
            sys.exit(error.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="nash",
    cls=_OneLineUsageErrors,
    help="From raw text to a trained GPT-2-style language model: prepare, train, eval, generate, chat, plot, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Exit codes (documented in README.md): 0 the job finished; 2 a user error, one line on stderr;
# 128 + N a run stopped by signal N after saving (130 Ctrl-C, 143 SIGTERM); 1 a bug (a traceback).
USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT

# The file system errors a user causes or fixes (a full disk, a read-only or foreign folder, a
# wrong path), with the fix; any other OSError is a bug and keeps its traceback.
FILE_SYSTEM_FIXES = {
    errno.ENOSPC: "free some space, or write elsewhere (--out, --set runs_dir=...)",
    errno.EDQUOT: "free some space, or write elsewhere (--out, --set runs_dir=...)",
    errno.EROFS: "write to another folder (--out, --set runs_dir=...)",
    errno.EACCES: "check the permissions, or write to another folder (--out, --set runs_dir=...)",
    errno.EPERM: "check the permissions, or write to another folder (--out, --set runs_dir=...)",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path: a part of it is a file, not a folder",
    errno.EISDIR: "check the path: it is a folder, not a file",
    errno.ENAMETOOLONG: "use a shorter name",
    errno.EIO: "the disk reported a read or write failure: check it, or use another",
}


def describe_file_system_error(error: OSError) -> str:
    """`<path>: <what the system said>: <the fix>` in one line."""
    paths = [str(path) for path in (error.filename, error.filename2) if path is not None]
    where = f"{' -> '.join(paths)}: " if paths else ""
    return f"{where}{error.strerror or error}: {FILE_SYSTEM_FIXES[error.errno]}"


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"nash {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    context: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of errors.")] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    # Sub-command contexts inherit `obj`: each command finds --debug there, not in a global.
    context.obj = {"debug": debug}


def _render_user_errors(command: Callable) -> Callable:
    """Turn a NashError (or a file system error) into one red line and exit code 2; the traceback
    only with --debug. The wrapper takes the click context as its first parameter to read --debug."""

    @functools.wraps(command)
    def wrapper(context: typer.Context, *args, **kwargs):
        debug = (context.obj or {}).get("debug", False)
        try:
            return command(*args, **kwargs)
        except NashError as error:
            if debug:
                raise
            print_error(str(error))
            raise typer.Exit(code=USER_ERROR_EXIT_CODE) from None
        except OSError as error:
            if debug or error.errno not in FILE_SYSTEM_FIXES:
                raise
            print_error(describe_file_system_error(error))
            raise typer.Exit(code=USER_ERROR_EXIT_CODE) from None
        except KeyboardInterrupt:
            # A second Ctrl-C (the first one asks training to save and stop): no traceback.
            print_error("interrupted")
            raise typer.Exit(code=INTERRUPTED_EXIT_CODE) from None

    signature = inspect.signature(command)
    context_parameter = inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    wrapper.__signature__ = signature.replace(parameters=[context_parameter, *signature.parameters.values()])
    return wrapper


def _register_commands() -> None:
    # Imported here so that `nash --help` pays only for the modules, not for torch.
    from nashcli.cli import chat, compare, evaluate, export, generate, plot, prepare, train

    commands: dict[str, Callable] = {
        "prepare": prepare.command,
        "train": train.command,
        "eval": evaluate.command,
        "generate": generate.command,
        "chat": chat.command,
        "plot": plot.command,
        "compare": compare.command,
        "export": export.command,
    }
    for name, function in commands.items():
        app.command(name)(_render_user_errors(function))


_register_commands()


def main() -> None:
    app()
