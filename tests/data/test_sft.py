import io
import json

import pytest
import torch

from nashcli.data.sft import (
    SFTBatches,
    load_sft_examples,
    render_chat_prompt,
    split_sft_examples,
)
from nashcli.data.tokenizer import get_tokenizer
from nashcli.errors import NashError
from nashcli.model.loss import IGNORE_INDEX


def write_examples(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def trained_targets(y, row):
    """(input position, target id) pairs that carry loss in one row."""
    return [(position, int(y[row, position])) for position in range(y.shape[1]) if y[row, position] != IGNORE_INDEX]


def test_loss_covers_exactly_the_completion_tokens_and_eot(tmp_path):
    tokenizer = get_tokenizer()
    prompt, completion = "Question: what is the capital of France?\nAnswer:", " Paris, of course."
    path = write_examples(tmp_path / "sft.jsonl", [{"prompt": prompt, "completion": completion}, {"prompt": "Hi", "completion": " there"}])
    examples, stats = load_sft_examples(path, tokenizer, max_seq_len=64)
    prompt_ids, completion_ids = tokenizer.encode(prompt), tokenizer.encode(completion)
    batches = SFTBatches(examples, batch_size=2, seed=0)
    x, y = next(batches.eval_batches(1))
    row = next(r for r in range(2) if int(x[r, 0]) == prompt_ids[0])
    targets = trained_targets(y, row)
    assert [token for _, token in targets] == completion_ids + [50256]
    # The first trained target is predicted from the last prompt token.
    assert targets[0][0] == len(prompt_ids) - 1
    assert x[row, : len(prompt_ids) + len(completion_ids)].tolist() == prompt_ids + completion_ids
    assert stats.examples == 2 and stats.completion_tokens == len(completion_ids) + 1 + len(tokenizer.encode(" there")) + 1
    assert stats.warnings == []


def test_batches_pad_to_the_longest_example_in_the_batch(tmp_path):
    path = write_examples(tmp_path / "sft.jsonl", [{"prompt": "a", "completion": " b"}, {"prompt": "a b c d e", "completion": " f g"}])
    examples, _ = load_sft_examples(path, get_tokenizer(), max_seq_len=512)
    x, y = next(SFTBatches(examples, batch_size=2, seed=0).eval_batches(1))
    assert x.shape == y.shape == (2, max(len(e.tokens) for e in examples) - 1)
    short = min(range(2), key=lambda r: int((y[r] != IGNORE_INDEX).sum()))
    n = len(examples[0].tokens) - 1
    assert x[short, n:].tolist() == [50256] * (x.shape[1] - n)
    assert (y[short, n:] == IGNORE_INDEX).all()


def test_chat_messages_use_the_documented_template(tmp_path):
    tokenizer = get_tokenizer()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    assert render_chat_prompt(messages) == "<|system|>\nBe brief.\n<|user|>\nCapital of France?\n<|assistant|>\n"
    path = write_examples(tmp_path / "chat.jsonl", [{"messages": messages}])
    examples, _ = load_sft_examples(path, tokenizer, max_seq_len=128)
    x, y = SFTBatches(examples, batch_size=1, seed=0).next_batch()
    assert [token for _, token in trained_targets(y, 0)] == tokenizer.encode("Paris.") + [50256]


def test_truncation_keeps_the_end_of_the_prompt_and_skips_what_cannot_fit(tmp_path):
    tokenizer = get_tokenizer()
    long_prompt = " ".join(f"w{i}" for i in range(100))
    path = write_examples(
        tmp_path / "sft.jsonl",
        [
            {"prompt": long_prompt, "completion": " end"},
            {"prompt": "short", "completion": " x" * 40},
            {"prompt": "ok", "completion": " fine"},
        ],
    )
    examples, stats = load_sft_examples(path, tokenizer, max_seq_len=20)
    assert (stats.examples, stats.truncated, stats.skipped) == (2, 1, 1)
    kept = examples[0]
    completion = tokenizer.encode(" end") + [50256]
    assert len(kept.tokens) == 21 and kept.tokens[-len(completion):].tolist() == completion
    assert kept.tokens[: kept.num_prompt_tokens].tolist() == tokenizer.encode(long_prompt)[-(21 - len(completion)):]
    assert [e.line for e in examples] == [1, 3]
    assert any("lost the start of their prompt (first: line 1)" in w for w in stats.warnings)
    assert any("skipped 1 example(s)" in w and "line 2" in w for w in stats.warnings)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a", "completion": ', r"sft.jsonl line 2: not valid JSON"),
        ('{"prompt": "a"}', r"sft.jsonl line 2: expected \{\"prompt\": text, \"completion\": text\}"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', r"sft.jsonl line 2: the last message must be the assistant's"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', r"sft.jsonl line 2: 'messages' must be a non-empty list"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "sft.jsonl"
    path.write_text('{"prompt": "ok", "completion": " yes"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(NashError, match=message):
        load_sft_examples(path, get_tokenizer(), max_seq_len=32)


def test_state_dict_round_trip_and_rank_split(tmp_path):
    records = [{"prompt": f"p{i}", "completion": f" c{i}" * (i % 4 + 1)} for i in range(10)]
    examples, _ = load_sft_examples(write_examples(tmp_path / "sft.jsonl", records), get_tokenizer(), max_seq_len=64)
    batches = SFTBatches(examples, batch_size=4, seed=5)
    for _ in range(3):
        batches.next_batch()
    buffer = io.BytesIO()
    torch.save(batches.state_dict(), buffer)
    buffer.seek(0)
    resumed = SFTBatches(examples, batch_size=4, seed=5)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(4):
        (x, y), (x2, y2) = batches.next_batch(), resumed.next_batch()
        assert torch.equal(x, x2) and torch.equal(y, y2)
    ranks = [SFTBatches(examples, batch_size=2, seed=5, rank=r, world_size=2) for r in (0, 1)]
    first_rows = [{tuple(row.tolist()) for row in rank.next_batch()[0]} for rank in ranks]
    assert not first_rows[0] & first_rows[1]


def test_split_holds_out_a_seeded_fraction(tmp_path):
    records = [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(40)]
    examples, _ = load_sft_examples(write_examples(tmp_path / "sft.jsonl", records), get_tokenizer(), max_seq_len=64)
    train, val = split_sft_examples(examples, 0.1, seed=0)
    assert (len(train), len(val)) == (36, 4)
    assert {e.line for e in train} | {e.line for e in val} == set(range(1, 41))
    assert [e.line for e in split_sft_examples(examples, 0.1, seed=0)[1]] == [e.line for e in val]
    with pytest.raises(NashError, match="set data.sft_val_file"):
        split_sft_examples(examples[:1], 0.1, seed=0)


def test_a_multi_turn_example_is_rendered_in_the_chat_format_that_nash_chat_uses(tmp_path):
    from nashcli.data import chat_format

    tokenizer = get_tokenizer()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    path = write_examples(tmp_path / "chat.jsonl", [{"messages": messages}])
    (example,), _ = load_sft_examples(path, tokenizer, max_seq_len=128)
    prompt = "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello.\n<|user|>\nCapital of France?\n<|assistant|>\n"
    assert chat_format.render_prompt(messages[:-1]) == prompt
    assert example.tokens.tolist() == tokenizer.encode(prompt) + tokenizer.encode("Paris.") + [50256]
    assert chat_format.answer_end_token(tokenizer) == 50256
