"""Text pieces to token arrays, on all cores, with exactly the tokens of whole documents.

Documents are cut into segments of at most `max_segment_chars` so that one huge document neither
fills memory nor keeps a single core busy. A cut is made only before a space that sits between two
non-space characters (" word"): GPT-2's pre-tokenizer never joins text across such a point (every
pre-token that contains a space starts with it), so encoding the segments one by one gives the same
ids as encoding the whole document. Text with no such space in 4x the limit is cut hard, the one
place where ids may differ from whole-document encoding (only millions of characters without a
single "x y" get there).

Segments are encoded by a thread pool: tiktoken releases the GIL while it encodes, so threads scale
across cores and need no process spawning (safe on macOS and Windows).
"""

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import tiktoken

from nashcli.data.text_files import Piece

MAX_SEGMENT_CHARS = 1 << 20
# Segments are handed to the pool in chunks of about this many characters (~80k tokens): big enough
# to make the per-task cost negligible for corpora of tiny documents, small enough to keep memory low.
CHUNK_CHARS = 1 << 18


@dataclass
class Segment:
    text: str
    starts_document: bool
    ends_document: bool


@dataclass
class EncodedSegment:
    tokens: np.ndarray  # (n,) uint16
    starts_document: bool
    ends_document: bool


def split_into_segments(pieces: Iterable[Piece], max_segment_chars: int = MAX_SEGMENT_CHARS) -> Iterator[Segment]:
    """Re-cut source pieces into segments at safe points; empty documents are dropped.

    A segment is cut at the last safe point within `max_segment_chars`, else at the first one after
    it, else (no safe point in 4 x max_segment_chars) hard at `max_segment_chars`.
    """
    hard_limit = 4 * max_segment_chars
    pending = ""  # text of the current document not yet emitted
    starts = True
    for text, ends_document in pieces:
        text = pending + text if pending else text
        while len(text) > max_segment_chars:
            cut = _safe_cut(text, max_segment_chars, hard_limit)
            if cut is None:
                if len(text) < hard_limit:
                    break  # wait for more text: a safe point may still come
                cut = max_segment_chars
            yield Segment(text[:cut], starts, False)
            starts = False
            text = text[cut:]
        if not ends_document:
            pending = text
            continue
        if text or not starts:
            yield Segment(text, starts, True)
        pending, starts = "", True


def _is_safe(text: str, position: int) -> bool:
    """True if text[position] is a space between two non-space characters."""
    return 0 < position < len(text) - 1 and not text[position - 1].isspace() and not text[position + 1].isspace()


def _safe_cut(text: str, limit: int, hard_limit: int) -> int | None:
    """The last safe point <= limit, else the first one < hard_limit, else None."""
    position = text.rfind(" ", 1, limit + 1)
    while position > 0:
        if _is_safe(text, position):
            return position
        position = text.rfind(" ", 1, position)
    position = text.find(" ", limit + 1, hard_limit)
    while position != -1:
        if _is_safe(text, position):
            return position
        position = text.find(" ", position + 1, hard_limit)
    return None


def encode_segments(
    segments: Iterable[Segment], encoding: tiktoken.Encoding, num_threads: int, chunk_chars: int = CHUNK_CHARS
) -> Iterator[list[EncodedSegment]]:
    """Encode segments on `num_threads` threads; yields the encoded chunks in input order.

    At most 2 x num_threads chunks are in flight, so memory is bounded whatever the input size.
    """

    def encode_chunk(chunk: list[Segment]) -> list[EncodedSegment]:
        return [
            EncodedSegment(
                np.array(encoding.encode_ordinary(segment.text), dtype=np.uint16),
                segment.starts_document,
                segment.ends_document,
            )
            for segment in chunk
        ]

    in_flight: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="nash-encode") as pool:
        try:
            for chunk in _chunks(segments, chunk_chars):
                if len(in_flight) >= 2 * num_threads:
                    yield in_flight.popleft().result()
                in_flight.append(pool.submit(encode_chunk, chunk))
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            # Stopped early (token budget reached, error, Ctrl-C): drop the work not yet started.
            for future in in_flight:
                future.cancel()


def _chunks(segments: Iterable[Segment], chunk_chars: int) -> Iterator[list[Segment]]:
    chunk: list[Segment] = []
    chars = 0
    for segment in segments:
        chunk.append(segment)
        chars += len(segment.text)
        if chars >= chunk_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk
