"""`nash prepare`."""

from nashcli.errors import NashError


def command() -> None:
    """Tokenize a text source into token shards: the built-in corpus, a registry name, a hub dataset or local files.

    Example: nash prepare shakespeare
    """
    raise NashError("`nash prepare` is not built yet")
