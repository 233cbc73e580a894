"""`nash eval`."""

from nashcli.errors import NashError


def command() -> None:
    """Evaluate a run or checkpoint on validation data: loss, perplexity, accuracy.

    Example: nash eval runs/tiny --json
    """
    raise NashError("`nash eval` is not built yet")
