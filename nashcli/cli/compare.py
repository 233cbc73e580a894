"""`nash compare`."""

from nashcli.errors import NashError


def command() -> None:
    """Compare runs: overlaid curves, a results table and the config keys that differ.

    Example: nash compare run1 run2
    """
    raise NashError("`nash compare` is not built yet")
