"""Reading local text files as documents, in bounded memory: whole .txt files, blank-line-separated
blocks, and JSON lines. Each reader yields pieces `(text, ends_document)`."""

import gzip
import json
import zlib
from pathlib import Path
from typing import IO, Iterator

from nashcli.errors import NashError

Piece = tuple[str, bool]  # (text, ends_document)

# Big documents are read in pieces of this many characters, so memory stays flat on a 1 GB .txt file.
PIECE_CHARS = 1 << 20
# A JSON line is parsed whole: longer lines are refused rather than read into memory without limit
# (a file with no newline at all would otherwise be read whole).
JSON_LINE_MAX_BYTES = 256 << 20
# What reading a damaged file raises besides UnicodeDecodeError: a truncated .gz raises EOFError,
# corrupt compressed data zlib.error, a bad gzip header or CRC gzip.BadGzipFile (an OSError).
UNREADABLE_ERRORS = (OSError, EOFError, zlib.error)


def read_text_document(path: Path) -> Iterator[Piece]:
    """A whole .txt file as one document, in pieces of PIECE_CHARS characters."""
    with _open_text(path) as file:
        while True:
            text = _read_or_explain(path, file)
            if not text:
                break
            yield text, False
    yield "", True


def read_blank_line_documents(path: Path) -> Iterator[Piece]:
    """A .txt file as documents separated by blank lines (trailing newlines of a document dropped)."""
    lines: list[str] = []
    chars = 0
    started = False  # some of the current document was already yielded
    with _open_text(path) as file:
        for line in _lines_or_explain(path, file):
            if not line.strip():
                if lines or started:
                    yield "".join(lines).rstrip("\n"), True
                lines, chars, started = [], 0, False
                continue
            lines.append(line)
            chars += len(line)
            if chars >= PIECE_CHARS:
                text = "".join(lines)
                body = text.rstrip("\n")
                yield body, False
                # Newlines wait: if a blank line follows, they end the document and are dropped.
                lines, chars, started = [text[len(body) :]], len(text) - len(body), True
    if lines or started:
        yield "".join(lines).rstrip("\n"), True


def read_jsonl_records(path: Path, max_line_bytes: int = JSON_LINE_MAX_BYTES) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line of a .jsonl (or .jsonl.gz) file.

    A line that is not UTF-8, not JSON or longer than `max_line_bytes`, and a damaged gzip stream,
    are NashErrors naming the file and line.
    """
    for line_number, line in _numbered_lines(path, max_line_bytes):
        if line.strip():
            yield line_number, _parse_json_line(path, line_number, line)


def read_jsonl_documents(path: Path, text_field: str) -> Iterator[Piece]:
    """One document per JSON line, from `text_field`; a bad line is a NashError naming file and line."""
    for line_number, record in read_jsonl_records(path):
        if not isinstance(record, dict) or text_field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise NashError(
                f"{path} line {line_number}: no '{text_field}' field (found: {fields}): pass --text-field NAME"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise NashError(f"{path} line {line_number}: '{text_field}' is {type(text).__name__}, not a string")
        if text:
            yield text, True


def _numbered_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    # Bytes, not text: a bad byte is then reported with its own line number, and a file with no
    # newline is refused at max_line_bytes instead of being read whole into memory.
    try:
        file = gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")
    except OSError as error:
        raise NashError(f"{path} could not be read ({error.strerror or error}): check the file") from None
    with file:
        line_number = 0
        while True:
            line_number += 1
            try:
                line = file.readline(max_line_bytes + 1)
            except UNREADABLE_ERRORS as error:
                raise NashError(f"{path} line {line_number}: {_unreadable(error)}") from None
            if not line:
                return
            if len(line) > max_line_bytes:
                raise NashError(
                    f"{path} line {line_number} is longer than {max_line_bytes:,} bytes: split or shorten the record"
                )
            yield line_number, line


def _parse_json_line(path: Path, line_number: int, line: bytes) -> object:
    where = f"{path} line {line_number}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        reason = f"{error.reason} at byte {error.start + 1}"
        raise NashError(f"{where} is not UTF-8 text ({reason}): convert it to UTF-8") from None
    try:
        return parse_json(text)
    except ValueError as error:
        raise NashError(f"{where}: not valid JSON ({error}): fix or remove the line") from None


def parse_json(text: str) -> object:
    """json.loads for a file nash did not write: every failure is a ValueError with a one-line reason,
    including those json.loads lets through as other errors."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at character {error.pos + 1}") from None
    except ValueError:  # an integer of thousands of digits
        raise ValueError("a number too long to read") from None
    except RecursionError:  # arrays or objects nested thousands deep
        raise ValueError("nested too deeply") from None


def _is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _unreadable(error: BaseException) -> str:
    """The reason and the fix for one of UNREADABLE_ERRORS."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"the file could not be read ({reason}): it may be damaged or incomplete; re-create or re-download it"


def _open_text(path: Path) -> IO[str]:
    if _is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_or_explain(path: Path, file: IO[str]) -> str:
    try:
        return file.read(PIECE_CHARS)
    except UnicodeDecodeError as error:
        raise NashError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): convert it to UTF-8") from None
    except UNREADABLE_ERRORS as error:
        raise NashError(f"{path}: {_unreadable(error)}") from None


def _lines_or_explain(path: Path, file: IO[str]) -> Iterator[str]:
    try:
        yield from file
    except UnicodeDecodeError as error:
        raise NashError(f"{path} is not UTF-8 text ({error.reason}): convert it to UTF-8") from None
    except UNREADABLE_ERRORS as error:
        raise NashError(f"{path}: {_unreadable(error)}") from None
