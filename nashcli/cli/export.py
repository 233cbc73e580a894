"""`nash export`."""

from nashcli.errors import NashError


def command() -> None:
    """Export a run's weights in the Hugging Face GPT-2 format.

    Example: nash export runs/tiny --format hf --out gpt2-tiny
    """
    raise NashError("`nash export` is not built yet")
