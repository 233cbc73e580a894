import hashlib

import pytest

from nashcli.assets import GPT2_BPE_PATH, GPT2_BPE_SHA256
from nashcli.data.tokenizer import get_tokenizer


def test_known_ids_match_tiktoken_gpt2():
    tokenizer = get_tokenizer()
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert tokenizer.encode(" the") == [262]
    # Special text is ordinary text when encoding data: "<", "|", "end", "of", "text", "|", ">".
    assert tokenizer.encode("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]


def test_vocab_and_end_of_text():
    tokenizer = get_tokenizer()
    assert tokenizer.vocab_size == 50257
    assert tokenizer.eot_token == 50256
    assert tokenizer.decode([50256]) == "<|endoftext|>"


@pytest.mark.parametrize("text", ["Ünïcödé — naïve café", "日本語のテキスト", "emoji 🤖🚀 mixed\n\ttabs", "  spaces  "])
def test_unicode_round_trip(text):
    tokenizer = get_tokenizer()
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_batch_encode_equals_single_encode():
    tokenizer = get_tokenizer()
    texts = ["To be, or not to be", "that is the question:", ""]
    assert tokenizer.encode_batch(texts, num_threads=2) == [tokenizer.encode(text) for text in texts]


def test_shipped_file_is_the_gpt2_ranks():
    assert hashlib.sha256(GPT2_BPE_PATH.read_bytes()).hexdigest() == GPT2_BPE_SHA256


def test_matches_tiktoken_r50k_on_a_longer_text():
    # tiktoken's own get_encoding("gpt2") needs a download; build its r50k encoding from tiktoken's
    # published split pattern over the same ranks and compare.
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    reference = tiktoken.Encoding(
        name="r50k_reference",
        pat_str=r50k_pat_str,
        mergeable_ranks=load_tiktoken_bpe(str(GPT2_BPE_PATH)),
        special_tokens={"<|endoftext|>": 50256},
    )
    text = "It's 2026: O Romeo, Romeo! wherefore art thou Romeo?  Deny thy father\n\nand refuse thy name 123456."
    assert get_tokenizer().encode(text) == reference.encode_ordinary(text)


def test_token_byte_lengths_add_up_to_the_bytes_of_the_text():
    from nashcli.data.tokenizer import token_byte_lengths

    tokenizer = get_tokenizer()
    lengths = token_byte_lengths()
    assert len(lengths) == tokenizer.vocab_size and lengths[tokenizer.eot_token] == len("<|endoftext|>")
    text = "naïve café 😀 東京, plain ASCII too"
    assert sum(lengths[token] for token in tokenizer.encode(text)) == len(text.encode("utf-8"))
