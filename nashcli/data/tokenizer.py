"""The exact GPT-2 BPE tokenizer, built with tiktoken from the file shipped in nashcli/assets.

No network: tiktoken's own `get_encoding("gpt2")` downloads its files, this does not.
"""

import functools
import os
from typing import Iterable

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from nashcli.assets import GPT2_BPE_PATH, GPT2_BPE_SHA256

# The regex GPT-2 splits text with before BPE (tiktoken's r50k_base / gpt2 pattern).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
EOT_TEXT = "<|endoftext|>"


class Tokenizer:
    """GPT-2 BPE: 50257 ids, `<|endoftext|>` = 50256.

    >>> get_tokenizer().encode("Hello world")
    [15496, 995]
    """

    def __init__(self, encoding: tiktoken.Encoding):
        self.encoding = encoding
        self.eot_token: int = encoding.eot_token
        self.vocab_size: int = encoding.n_vocab
        self.name = "gpt2"

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special-token text such as "<|endoftext|>" is encoded as ordinary text."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Iterable[str], num_threads: int | None = None) -> list[list[int]]:
        """Ids of many texts at once, tokenized on `num_threads` threads (default: all cores)."""
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads or os.cpu_count() or 1)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Raw bytes: lets a streaming printer hold back a character split across tokens."""
        return self.encoding.decode_bytes(list(ids))


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    """The GPT-2 tokenizer (loaded once per process; the file's sha256 is verified)."""
    ranks = load_tiktoken_bpe(str(GPT2_BPE_PATH), expected_hash=GPT2_BPE_SHA256)
    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT_TEXT: len(ranks)},
        explicit_n_vocab=len(ranks) + 1,
    )
    return Tokenizer(encoding)


@functools.lru_cache(maxsize=1)
def token_byte_lengths() -> tuple[int, ...]:
    """The UTF-8 length in bytes of every GPT-2 token id's text (for bits per byte).

    Decoding joins tokens' bytes, so the bytes of a sequence's text are the sum over its tokens; a
    token may hold part of a character. `<|endoftext|>` counts as its 13 characters of text.

    >>> token_byte_lengths()[15496]  # "Hello"
    5
    """
    encoding = get_tokenizer().encoding
    return tuple(len(encoding.decode_single_token_bytes(token)) for token in range(encoding.n_vocab))
