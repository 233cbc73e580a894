"""`nash generate`."""

from nashcli.errors import NashError


def command() -> None:
    """Generate text from a run or checkpoint, streamed to the terminal.

    Example: nash generate runs/tiny --prompt "ROMEO:"
    """
    raise NashError("`nash generate` is not built yet")
