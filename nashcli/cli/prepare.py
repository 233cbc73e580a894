"""`nash prepare`."""

from nashcli.errors import NashError


def command() -> None:
    """Tokenize a text source into token shards: `nash prepare shakespeare`."""
    raise NashError("`nash prepare` is not built yet")
