"""`nash export`."""

from nashcli.errors import NashError


def command() -> None:
    """Export a run's weights in the Hugging Face GPT-2 format."""
    raise NashError("`nash export` is not built yet")
