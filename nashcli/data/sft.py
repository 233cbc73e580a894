"""Supervised fine-tuning data: prompt/completion examples, and batches that train on completions only.

File format: `.jsonl`, one JSON object per line, either

    {"prompt": "Translate to French: cheese\\n", "completion": "fromage"}

or the chat form

    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris."}]}

Chat template: the one in nashcli/data/chat_format.py, which `nash chat` talks in too. Roles are
system, user and assistant; each message is rendered as a plain-text marker line followed by its
content and a newline, and the prompt ends with the assistant marker:

    <|system|>\\nYou are terse.\\n<|user|>\\nCapital of France?\\n<|assistant|>\\n

The last message must be the assistant's: it is the completion ("Paris."). Earlier assistant turns
are part of the prompt. The markers are ordinary text to the GPT-2 tokenizer, not special tokens.

Each example becomes the tokens of prompt + completion + `<|endoftext|>` (prompt and completion are
tokenized separately, so put any separator, a space or newline, in the text itself). Targets are the
inputs shifted by one; the loss covers exactly the targets that are completion tokens or the closing
`<|endoftext|>`: prompt and padding targets carry IGNORE_INDEX.

Too long (more than model.max_seq_len + 1 tokens): the prompt loses its start, keeping its end next
to the completion (counted and warned about). An example whose completion + `<|endoftext|>` alone
does not fit leaves no room for any prompt: it is skipped and counted.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from nashcli.data.chat_format import CHAT_ROLES, answer_end_token, render_chat_prompt
from nashcli.data.order import RankBatchOrder
from nashcli.data.text_files import read_jsonl_records
from nashcli.data.tokenizer import Tokenizer
from nashcli.errors import NashError
from nashcli.model.loss import IGNORE_INDEX

# A longer example line is refused: tokenizing one line takes ~50x its size in memory, and 16 MiB is
# already ~30x the ordinary text that fits the longest context (131,072 tokens).
SFT_LINE_MAX_BYTES = 16 << 20


@dataclass
class SFTExample:
    tokens: np.ndarray  # (n,) int64: prompt + completion + EOT
    num_prompt_tokens: int
    line: int  # line of the example in its file, for messages


@dataclass
class SFTStats:
    """What loading an SFT file found; `warnings` are one-line messages for the user."""

    path: Path
    examples: int = 0
    truncated: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # trained targets: completion tokens + one EOT per example
    warnings: list[str] = field(default_factory=list)


def load_sft_examples(path: Path, tokenizer: Tokenizer, max_seq_len: int) -> tuple[list[SFTExample], SFTStats]:
    """Read, template, tokenize and fit to `max_seq_len` the examples of an SFT `.jsonl` file.

    NashError for a missing file, a malformed line (with its line number), or no usable example.
    """
    lines, prompts, completions = _read_prompt_completion_pairs(path)
    if not lines:
        raise NashError(f"{path} holds no examples: write one JSON object per line (prompt/completion or messages)")
    window = max_seq_len + 1
    stats = SFTStats(path)
    examples: list[SFTExample] = []
    first_truncated: Optional[int] = None
    first_skipped: Optional[int] = None
    prompt_ids_list = tokenizer.encode_batch(prompts)
    completion_ids_list = tokenizer.encode_batch(completions)
    for line, prompt_ids, completion_ids in zip(lines, prompt_ids_list, completion_ids_list):
        completion_ids = completion_ids + [answer_end_token(tokenizer)]
        # Nothing to learn: the completion leaves no room for a prompt, or there is no target at all.
        if len(completion_ids) >= window or len(prompt_ids) + len(completion_ids) < 2:
            stats.skipped += 1
            first_skipped = first_skipped or line
            continue
        if len(prompt_ids) + len(completion_ids) > window:
            prompt_ids = prompt_ids[len(prompt_ids) + len(completion_ids) - window :]
            stats.truncated += 1
            first_truncated = first_truncated or line
        tokens = np.array(prompt_ids + completion_ids, dtype=np.int64)
        examples.append(SFTExample(tokens, len(prompt_ids), line))
        stats.prompt_tokens += len(prompt_ids)
        stats.completion_tokens += len(completion_ids)
    stats.examples = len(examples)
    if stats.truncated:
        stats.warnings.append(
            f"{path}: {stats.truncated} example(s) longer than {window} tokens (model.max_seq_len + 1) lost the "
            f"start of their prompt (first: line {first_truncated})"
        )
    if stats.skipped:
        stats.warnings.append(
            f"{path}: skipped {stats.skipped} example(s) whose completion alone fills the {window}-token window "
            f"or that are empty (first: line {first_skipped})"
        )
    if not examples:
        raise NashError(
            f"{path}: no example fits model.max_seq_len={max_seq_len} (all completions are too long): "
            "raise model.max_seq_len or shorten the completions"
        )
    return examples, stats


def _read_prompt_completion_pairs(path: Path) -> tuple[list[int], list[str], list[str]]:
    """(line numbers, prompts, completions) of every example line; NashError naming a bad line."""
    lines: list[int] = []
    prompts: list[str] = []
    completions: list[str] = []
    if not path.is_file():
        raise NashError(f"SFT file {path} does not exist: check data.sft_file / data.sft_val_file")
    for line_number, record in read_jsonl_records(path, SFT_LINE_MAX_BYTES):
        prompt, completion = _example_texts(record, f"{path} line {line_number}")
        lines.append(line_number)
        prompts.append(prompt)
        completions.append(completion)
    return lines, prompts, completions


def _example_texts(record: object, where: str) -> tuple[str, str]:
    if isinstance(record, dict) and "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and m.get("role") in CHAT_ROLES and isinstance(m.get("content"), str) for m in messages
        ):
            raise NashError(
                f"{where}: 'messages' must be a non-empty list of {{\"role\": system|user|assistant, \"content\": text}}"
            )
        if messages[-1]["role"] != "assistant":
            raise NashError(f"{where}: the last message must be the assistant's (it is the completion to learn)")
        return render_chat_prompt(messages), messages[-1]["content"]
    if isinstance(record, dict) and isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        return record["prompt"], record["completion"]
    raise NashError(f"{where}: expected {{\"prompt\": text, \"completion\": text}} or {{\"messages\": [...]}}")


def split_sft_examples(
    examples: list[SFTExample], val_fraction: float, seed: int
) -> tuple[list[SFTExample], list[SFTExample]]:
    """(train, val): a seeded random `val_fraction` of the examples (at least one) held out."""
    if val_fraction <= 0 or len(examples) < 2:
        raise NashError(
            f"cannot hold out validation examples from {len(examples)} example(s) with val fraction {val_fraction}: "
            "set data.sft_val_file or data.sft_val_fraction > 0 with at least 2 examples"
        )
    num_val = min(len(examples) - 1, max(1, round(val_fraction * len(examples))))
    permutation = np.random.default_rng([seed]).permutation(len(examples))
    val_set = set(permutation[:num_val].tolist())
    train = [example for index, example in enumerate(examples) if index not in val_set]
    val = [example for index, example in enumerate(examples) if index in val_set]
    return train, val


class SFTBatches:
    """Batches of SFT examples padded to the longest in the batch; same interface as PretrainBatches.

    x is the example tokens without the last, y without the first; y is IGNORE_INDEX where the target
    is a prompt token or padding, so the loss covers the completion and its `<|endoftext|>` only.
    """

    def __init__(
        self,
        examples: list[SFTExample],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad_token: int = 50256,
    ):
        if not examples:
            raise NashError("no SFT examples to train on")
        self.examples = examples
        self.pad_token = pad_token
        self.num_tokens: int = sum(len(example.tokens) - 1 for example in examples)
        self._order = RankBatchOrder(len(examples), batch_size, seed, rank, world_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch of this rank: x, y int64 (batch_size, longest example - 1)."""
        return self._batch(self._order.next_indices())

    def eval_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`num_batches` fixed batches, the same every call; ranks get disjoint examples."""
        return map(self._batch, self._order.eval_indices(num_batches))

    def state_dict(self) -> dict:
        return self._order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._order.load_state_dict(state)

    def _batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [self.examples[int(index)] for index in indices]
        length = max(len(example.tokens) for example in chosen) - 1
        x = torch.full((len(chosen), length), self.pad_token, dtype=torch.int64)  # (B, T)
        y = torch.full((len(chosen), length), IGNORE_INDEX, dtype=torch.int64)  # (B, T)
        for row, example in enumerate(chosen):
            tokens = torch.from_numpy(example.tokens)
            n = len(tokens) - 1
            x[row, :n] = tokens[:-1]
            y[row, :n] = tokens[1:]
            # y[j] is token j + 1: a prompt token while j + 1 < num_prompt_tokens.
            y[row, : max(example.num_prompt_tokens - 1, 0)] = IGNORE_INDEX
        return x, y
