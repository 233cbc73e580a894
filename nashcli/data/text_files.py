"""Reading local text files as documents, in bounded memory: whole .txt files, blank-line-separated
blocks, and JSON lines. Each reader yields pieces `(text, ends_document)`."""

import gzip
import json
from pathlib import Path
from typing import IO, Iterator

from nashcli.errors import NashError

Piece = tuple[str, bool]  # (text, ends_document)

# Big documents are read in pieces of this many characters, so memory stays flat on a 1 GB .txt file.
PIECE_CHARS = 1 << 20


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


def read_jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line of a .jsonl (or .jsonl.gz) file; a line that
    is not JSON is a NashError naming the file and line."""
    with _open_text(path) as file:
        for line_number, line in enumerate(_lines_or_explain(path, file), start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise NashError(f"{path} line {line_number}: not valid JSON ({error.msg}): fix or remove the line") from None


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


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_or_explain(path: Path, file: IO[str]) -> str:
    try:
        return file.read(PIECE_CHARS)
    except UnicodeDecodeError as error:
        raise NashError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}): convert it to UTF-8") from None


def _lines_or_explain(path: Path, file: IO[str]) -> Iterator[str]:
    try:
        yield from file
    except UnicodeDecodeError as error:
        raise NashError(f"{path} is not UTF-8 text ({error.reason}): convert it to UTF-8") from None
