import re
import subprocess
import sys

import typer
from typer.testing import CliRunner

from nashcli import __version__
from nashcli.cli.app import app

runner = CliRunner()
# The commands the app registers, read from the click group typer builds: a new command is checked
# without editing this file.
COMMANDS = sorted(typer.main.get_command(app).commands)


def test_the_documented_commands_are_registered():
    assert {"prepare", "train", "eval", "generate", "export", "plot", "compare"} <= set(COMMANDS)


def test_help_lists_every_command_with_a_summary():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"│ {name}\s+\S", result.output), f"{name} missing from --help"


def test_every_command_has_help_with_an_example():
    for name in COMMANDS:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert re.search(rf"Example: nash {name}\b", result.output), f"`nash {name} --help` shows no example"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"nash {__version__}"


def test_user_error_is_one_line_with_exit_code_2():
    result = runner.invoke(app, ["train", "--preset", "tiny", "--set", "train.lrr=3"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["error: unknown config key 'train.lrr': did you mean 'train.lr'?"]


def test_usage_errors_are_one_line_on_stderr_with_exit_code_2():
    cases = {
        ("generate", "runs/x", "--max-tokens", "0"): "error: nash generate: Invalid value for '--max-tokens': ",
        ("train", "--bogus"): "error: nash train: No such option: --bogus (see nash train --help)",
        ("eval",): "error: nash eval: Missing argument 'source'. (see nash eval --help)",
    }
    for args, expected in cases.items():
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2 and result.stdout == "", result.output
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(expected), result.stderr


def test_debug_shows_the_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "nashcli", "--debug", "train", "--preset", "nope"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "NashError: unknown preset 'nope'" in result.stderr


def test_python_dash_m_runs_the_group():
    result = subprocess.run([sys.executable, "-m", "nashcli", "--version"], capture_output=True, text=True)
    assert result.stdout.strip() == f"nash {__version__}"
