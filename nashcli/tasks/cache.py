"""The download cache: files nash fetches once and keeps, in ~/.cache/nash (or $NASH_CACHE_DIR).

A file appears in the cache only whole and checked: it is downloaded into a temporary file beside
its final name, validated, and renamed into place, so an interrupted or refused download leaves
nothing that a later run would take for the real file.
"""

import http.client
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from nashcli.errors import NashError

CACHE_ENV = "NASH_CACHE_DIR"
CHUNK_BYTES = 1 << 16
TIMEOUT_S = 60

# on_progress(bytes downloaded so far, total bytes or None when the server does not say)
DownloadProgress = Callable[[int, Optional[int]], None]


def cache_dir() -> Path:
    """$NASH_CACHE_DIR, else ~/.cache/nash."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nash"


def open_url(url: str) -> tuple[BinaryIO, Optional[int]]:
    """(a readable response, its announced length in bytes or None). The one network call: tests
    replace it."""
    response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 (a fixed https URL)
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def download_once(
    url: str,
    path: Path,
    *,
    what: str,
    max_bytes: int,
    validate: Callable[[Path], None],
    on_progress: Optional[DownloadProgress] = None,
) -> Path:
    """`path` if it is already there (no network), else `url` downloaded to it, atomically.

    `validate(temporary_path)` raises NashError when the downloaded bytes are not the expected file;
    it is then deleted and nothing is cached. A failed download is a NashError saying where to put
    the file by hand.
    """
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            _fetch(url, file, max_bytes, on_progress, what, path)
        validate(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _fetch(
    url: str, file: BinaryIO, max_bytes: int, on_progress: Optional[DownloadProgress], what: str, path: Path
) -> None:
    try:
        response, total = open_url(url)
        with response:
            done = 0
            while chunk := response.read(CHUNK_BYTES):
                done += len(chunk)
                if done > max_bytes:
                    raise NashError(f"{url} sent more than {max_bytes:,} bytes: it is not {what}")
                file.write(chunk)
                if on_progress is not None:
                    on_progress(done, total)
    # URLError and the socket's errors are OSErrors; a connection cut mid-body is an HTTPException.
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise NashError(
            f"could not download {what} from {url} ({reason}): download it by hand and save it as {path}, "
            "or pass its path with --task-file PATH"
        ) from None
