"""`nash plot`."""

from nashcli.errors import NashError


def command() -> None:
    """Plot a run's metrics to a PNG.

    Example: nash plot runs/tiny
    """
    raise NashError("`nash plot` is not built yet")
