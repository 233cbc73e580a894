"""Scoring tasks with a GPT: each continuation's cross-entropy given its context, batched.

A row is the context's tokens then the continuation's (tokenized apart, as llm.c does); only the
continuation's tokens are scored. Several examples' rows share one forward pass, right-padded (the
model is causal, so padding after a row never changes it), and the LM head runs only at the scored
positions, a few rows at a time: a task never holds logits for the whole batch.
"""

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nashcli.data.tokenizer import Tokenizer, get_tokenizer
from nashcli.model.gpt import GPT
from nashcli.model.loss import IGNORE_INDEX, eval_row_chunks, padded_cross_entropy_rows
from nashcli.tasks.base import ContinuationScore, Task

# Input tokens (rows x padded length) per forward pass: small on CPUs, where bigger gains nothing.
BATCH_TOKENS = {"cpu": 8192}
DEFAULT_BATCH_TOKENS = 65536


@dataclass(frozen=True)
class Row:
    """One continuation to score: its tokens (context first) and how many of the last ones are scored."""

    tokens: list[int]
    scored: int


def encode_row(tokenizer: Tokenizer, context: str, continuation: str, max_seq_len: int) -> Row:
    """The row of a (context, continuation) pair, left-truncated to fit the model.

    An empty context becomes <|endoftext|>, so that the first continuation token has a token to be
    predicted from. A row longer than max_seq_len + 1 tokens (max_seq_len inputs, each predicting
    the next) loses its first tokens: the context's, unless the continuation alone is too long, whose
    first tokens are then not scored.
    """
    context_tokens = tokenizer.encode(context) or [tokenizer.eot_token]
    continuation_tokens = tokenizer.encode(continuation)
    tokens = (context_tokens + continuation_tokens)[-(max_seq_len + 1) :]
    return Row(tokens, min(len(continuation_tokens), len(tokens) - 1))


@torch.no_grad()
def score_examples(
    model: nn.Module,
    task: Task,
    examples: Sequence[Any],
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    batch_tokens: Optional[int] = None,
    on_progress: Optional[Callable[[int], None]] = None,
) -> list[list[ContinuationScore]]:
    """The scores of every continuation of every example (in the task's order), `on_progress(done)`
    after each batch with the number of examples done. The model's train/eval mode is kept."""
    gpt = _unwrap(model)
    tokenizer, max_seq_len = get_tokenizer(), gpt.config.max_seq_len
    rows = [[encode_row(tokenizer, *pair, max_seq_len) for pair in task.continuations(ex)] for ex in examples]
    device = gpt.head_weight.device
    budget = batch_tokens or BATCH_TOKENS.get(device.type, DEFAULT_BATCH_TOKENS)
    # Longest first: examples of similar lengths share a batch, so little is padding.
    order = sorted(range(len(rows)), key=lambda index: -max(len(row.tokens) for row in rows[index]))
    results: list[list[ContinuationScore]] = [[] for _ in examples]
    was_training = gpt.training
    gpt.eval()
    try:
        done = 0
        for batch in _batches(order, rows, budget):
            scores = _score_rows(gpt, [row for index in batch for row in rows[index]], autocast)
            for index in batch:
                results[index], scores = scores[: len(rows[index])], scores[len(rows[index]) :]
            done += len(batch)
            if on_progress is not None:
                on_progress(done)
    finally:
        gpt.train(was_training)
    return results


def evaluate_task(
    model: nn.Module,
    task: Task,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    rank: int = 0,
    world_size: int = 1,
    sum_across_processes: Optional[Callable[[list[float]], list[float]]] = None,
    batch_tokens: Optional[int] = None,
    on_progress: Optional[Callable[[int], None]] = None,
) -> dict:
    """The task's metrics, means over its examples, and "count", the number of examples.

    Under DDP each process scores examples rank, rank + world_size, ... and `sum_across_processes`
    adds up the processes' sums and counts.

    Example: evaluate_task(model, load_task("hellaswag", limit=500)) -> {"acc": .., "acc_norm": .., "count": 500}
    """
    examples = task.examples[rank::world_size]
    scores = score_examples(
        model, task, examples, autocast=autocast, batch_tokens=batch_tokens, on_progress=on_progress
    )
    sums = dict.fromkeys(task.metric_names, 0.0)
    for example, example_scores in zip(examples, scores):
        for name, value in task.example_metrics(example, example_scores).items():
            sums[name] += value
    values = [*sums.values(), float(len(examples))]
    if sum_across_processes is not None:
        values = sum_across_processes(values)
    count = int(values[-1])
    return {**{name: value / count if count else math.nan for name, value in zip(sums, values)}, "count": count}


def _batches(order: list[int], rows: list[list[Row]], budget: int) -> list[list[int]]:
    """Consecutive examples of `order` whose rows, padded to the first (longest), fit `budget` tokens."""
    batches: list[list[int]] = []
    batch: list[int] = []
    batch_rows = padded_length = 0
    for index in order:
        length = max(len(row.tokens) for row in rows[index]) - 1  # inputs: the last token is only a target
        if batch and (batch_rows + len(rows[index])) * max(padded_length, length) > budget:
            batches.append(batch)
            batch, batch_rows, padded_length = [], 0, 0
        batch.append(index)
        batch_rows += len(rows[index])
        padded_length = max(padded_length, length)
    if batch:
        batches.append(batch)
    return batches


def _score_rows(
    model: GPT, rows: list[Row], autocast: Callable[[], contextlib.AbstractContextManager]
) -> list[ContinuationScore]:
    device = model.head_weight.device
    length = max(len(row.tokens) for row in rows) - 1
    inputs = torch.zeros(len(rows), length, dtype=torch.long)  # (B, T), right-padded
    targets = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for index, row in enumerate(rows):
        num_inputs = len(row.tokens) - 1
        inputs[index, :num_inputs] = torch.tensor(row.tokens[:-1])
        if row.scored:
            targets[index, num_inputs - row.scored : num_inputs] = torch.tensor(row.tokens[-row.scored :])
    inputs, targets = inputs.to(device), targets.to(device)
    scored = targets != IGNORE_INDEX  # (B, T)
    with autocast():
        hidden = model.hidden_states(inputs)[scored]  # (N, C): the scored positions only
    scored_targets = targets[scored]  # (N,)
    losses = torch.empty(len(scored_targets), dtype=torch.float32, device=device)  # (N,)
    wrong = torch.empty(len(scored_targets), dtype=torch.float32, device=device)  # (N,)
    vocab_size = model.config.vocab_size
    head = model.head_weight[:vocab_size]  # (V, C): the real rows, so the logits come out contiguous
    for chunk in eval_row_chunks(len(hidden), vocab_size, device):
        with autocast():
            logits = F.linear(hidden[chunk], head)  # (n, V)
        chunk_losses, predictions = padded_cross_entropy_rows(logits, scored_targets[chunk], vocab_size)
        losses[chunk] = chunk_losses
        wrong[chunk] = (predictions != scored_targets[chunk]).float()
    row_of = torch.arange(len(rows), device=device)[:, None].expand_as(scored)[scored]  # (N,)
    loss_sums = torch.zeros(len(rows), dtype=torch.float32, device=device).index_add_(0, row_of, losses)
    wrong_counts = torch.zeros(len(rows), dtype=torch.float32, device=device).index_add_(0, row_of, wrong)
    counts = scored.sum(dim=1)
    return [
        ContinuationScore(loss_sum=loss_sum, tokens=int(count), greedy=wrong_count == 0)
        for loss_sum, count, wrong_count in zip(loss_sums.tolist(), counts.tolist(), wrong_counts.tolist())
    ]


def _unwrap(model: nn.Module) -> GPT:
    """The GPT inside a torch.compile or DDP wrapper: scoring calls its parts, not its forward."""
    while not isinstance(model, GPT):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            raise TypeError(f"expected a GPT, got {type(model).__name__}")
        model = inner
    return model
