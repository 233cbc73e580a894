import random

import numpy as np

from nashcli.data.encode import Segment, encode_segments, split_into_segments
from nashcli.data.tokenizer import get_tokenizer

ALPHABET = ["a", "b", "Z", "é", "日", "1", "9", " ", " ", " ", "  ", "\n", "\n\n", "\t", ".", ",", "'", "'s", "'ll", "-", "🤖", "\r\n"]


def random_text(rng: random.Random, length: int) -> str:
    """Awkward text (runs of whitespace, contractions, unicode) with a safe cut point ("a b") every 12 symbols,
    so that the hard cut for space-free text never triggers."""
    symbols = [rng.choice(ALPHABET) if index % 12 else "a b" for index in range(length)]
    return "".join(symbols)


def cut_randomly(rng: random.Random, text: str) -> list[tuple[str, bool]]:
    """The pieces a source might yield for one document: cut at arbitrary places."""
    cuts = sorted(rng.sample(range(1, len(text)), k=min(5, len(text) - 1)))
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    return [(part, index == len(parts) - 1) for index, part in enumerate(parts)]


def test_segments_encode_to_exactly_the_tokens_of_the_whole_document():
    tokenizer = get_tokenizer()
    rng = random.Random(0)
    for _ in range(200):
        text = random_text(rng, rng.randint(20, 400))
        segments = list(split_into_segments(cut_randomly(rng, text), max_segment_chars=rng.randint(16, 60)))
        assert len(segments) > 1 or len(text) <= 60
        assert "".join(segment.text for segment in segments) == text
        for segment in segments[1:]:  # each cut is before a space between two non-space characters
            assert segment.text[0] == " " and not segment.text[1].isspace()
        assert [segment.starts_document for segment in segments] == [True] + [False] * (len(segments) - 1)
        assert [segment.ends_document for segment in segments] == [False] * (len(segments) - 1) + [True]
        joined = [token for segment in segments for token in tokenizer.encode(segment.text)]
        assert joined == tokenizer.encode(text), repr(text)


def test_long_documents_are_cut_below_the_limit_and_empty_documents_dropped():
    text = "word " * 1000
    segments = list(split_into_segments([("", True), (text, True), ("", True)], max_segment_chars=100))
    assert len(segments) > 40 and all(len(segment.text) <= 100 for segment in segments)
    assert [segment.ends_document for segment in segments].count(True) == 1
    assert "".join(segment.text for segment in segments) == text


def test_text_without_spaces_is_cut_hard_at_four_times_the_limit():
    segments = list(split_into_segments([("x" * 1000, True)], max_segment_chars=100))
    assert [len(segment.text) for segment in segments][:3] == [100, 100, 100]
    assert "".join(segment.text for segment in segments) == "x" * 1000


def test_encode_segments_keeps_order_and_flags_across_threads():
    tokenizer = get_tokenizer()
    segments = [Segment(f"document number {index} " * (index % 7 + 1), index % 3 == 0, index % 3 == 2) for index in range(300)]
    chunks = list(encode_segments(segments, tokenizer.encoding, num_threads=2, chunk_chars=500))
    assert len(chunks) > 10
    encoded = [segment for chunk in chunks for segment in chunk]
    assert [e.starts_document for e in encoded] == [s.starts_document for s in segments]
    for source, result in zip(segments, encoded):
        assert result.tokens.dtype == np.uint16
        assert result.tokens.tolist() == tokenizer.encode(source.text)
