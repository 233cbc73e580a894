"""sha256 checksums of the files nash writes, checked when nash reads them back.

A damaged checkpoint or token shard must be refused before any of it is used, not discovered when
the loss turns to NaN after days of training. (A hostile file can carry a matching checksum: shapes,
sizes and values are checked separately where the file is read.)
"""

import hashlib
from pathlib import Path

from nashcli.errors import NashError

_CHUNK_BYTES = 8 << 20  # large reads: hashing runs at ~1.5 GB/s, faster than most disks


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at `path`, read in chunks (memory stays flat for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, fix: str) -> None:
    """NashError naming `path` and `fix` unless the file's sha256 is `expected`."""
    try:
        actual = sha256_file(path)
    except OSError as error:
        raise NashError(f"{path} could not be read ({error.strerror or error}): {fix}") from None
    if actual != expected:
        raise NashError(f"{path} is damaged (its sha256 differs from the one recorded when it was written): {fix}")
