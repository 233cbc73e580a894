"""Scoring multiple-choice tasks: parity with transformers' GPT-2 on the same weights, batching,
truncation and the split of examples between processes."""

import math

import pytest
import torch

from nashcli.data.tokenizer import get_tokenizer
from nashcli.model.gpt import GPT
from nashcli.model.hf import load_hf_gpt2
from nashcli.tasks.registry import load_task
from nashcli.tasks.scoring import encode_row, evaluate_task, score_examples
from tests.tasks.files import write_hellaswag_file

transformers = pytest.importorskip("transformers")

CONTEXT = 64  # the models' max_seq_len: the long examples' rows are truncated


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(nash GPT, GPT2LMHeadModel) with the same random weights, imported through the hf folder."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=50257, n_positions=CONTEXT, initializer_range=0.05,
        bos_token_id=None, eos_token_id=None,
    )
    reference = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path_factory.mktemp("hf-tiny")
    reference.save_pretrained(folder)
    model_config, state_dict = load_hf_gpt2(str(folder))
    model = GPT(model_config)
    model.load_state_dict(state_dict)
    return model.eval(), reference


@pytest.fixture(scope="module")
def hellaswag_fixture(tmp_path_factory):
    """32 made-up examples in HellaSwag's file format, 4 of them with contexts longer than the model's."""
    path = tmp_path_factory.mktemp("hellaswag") / "hellaswag_val.jsonl"
    return load_task("hellaswag", task_file=write_hellaswag_file(path, 32, seed=1, long_contexts=4))


def reference_ending_losses(reference, pairs: list[tuple[str, str]]) -> list[list[float]]:
    """Each ending's per-token cross-entropy by transformers: the context then the ending (with its
    leading space), a row's first tokens dropped when it exceeds the context window. All rows in one
    right-padded forward pass with an attention mask (HF's forward costs ~0.1 s a call here)."""
    tokenizer = get_tokenizer()
    rows = []
    for context, ending in pairs:
        ending_tokens = tokenizer.encode(" " + ending)
        tokens = (tokenizer.encode(context) + ending_tokens)[-(CONTEXT + 1) :]
        rows.append((tokens, min(len(ending_tokens), len(tokens) - 1)))
    length = max(len(tokens) for tokens, _ in rows) - 1
    inputs = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for index, (tokens, _) in enumerate(rows):
        inputs[index, : len(tokens) - 1] = torch.tensor(tokens[:-1])
        mask[index, : len(tokens) - 1] = 1
    with torch.no_grad():
        hidden = reference.transformer(inputs, attention_mask=mask).last_hidden_state  # (rows, T, C)
    losses = []
    for index, (tokens, scored) in enumerate(rows):
        with torch.no_grad():  # the LM head on the ending's positions only: full logits would be 2 GB
            ending_logits = reference.lm_head(hidden[index, len(tokens) - 1 - scored : len(tokens) - 1]).double()
        targets = torch.tensor(tokens[len(tokens) - scored :])
        losses.append((-torch.log_softmax(ending_logits, dim=-1)[torch.arange(scored), targets]).tolist())
    return losses


def test_ending_losses_acc_and_acc_norm_match_transformers(models, hellaswag_fixture):
    model, reference = models
    task = hellaswag_fixture
    # A small batch budget: several batches, each padding examples of different lengths.
    scores = score_examples(model, task, task.examples, batch_tokens=700)
    reference_losses = iter(
        reference_ending_losses(reference, [(ex.context, ending) for ex in task.examples for ending in ex.endings])
    )
    correct = correct_norm = 0
    for example, example_scores in zip(task.examples, scores):
        sums, means = [], []
        for score in example_scores:
            losses = next(reference_losses)
            assert score.tokens == len(losses)
            assert score.loss_sum == pytest.approx(sum(losses), abs=1e-4)
            sums.append(sum(losses))
            means.append(sum(losses) / len(losses))
        correct += sums.index(min(sums)) == example.label
        correct_norm += means.index(min(means)) == example.label
    results = evaluate_task(model, task)
    assert results == {"acc": correct / 32, "acc_norm": correct_norm / 32, "count": 32}
    assert correct != correct_norm  # the two metrics differ on this fixture: each is really checked


def test_long_contexts_are_truncated_from_the_left_keeping_the_ending():
    tokenizer = get_tokenizer()
    context, ending = "one two three four five six seven eight", " nine ten"
    row = encode_row(tokenizer, context, ending, max_seq_len=4)
    assert row.tokens == (tokenizer.encode(context) + tokenizer.encode(ending))[-5:]
    assert row.scored == len(tokenizer.encode(ending)) == 2
    # An ending longer than the window keeps its last tokens; its first kept token is context only.
    long_ending = " " + " ".join(["word"] * 10)
    row = encode_row(tokenizer, context, long_ending, max_seq_len=4)
    assert row.tokens == tokenizer.encode(long_ending)[-5:] and row.scored == 4
    # An empty context: the ending is predicted from <|endoftext|>.
    row = encode_row(tokenizer, "", ending, max_seq_len=4)
    assert row.tokens == [tokenizer.eot_token, *tokenizer.encode(ending)] and row.scored == 2


def test_batching_does_not_change_the_scores(models, hellaswag_fixture):
    model, _ = models
    examples = hellaswag_fixture.examples[:12]
    alone = score_examples(model, hellaswag_fixture, examples, batch_tokens=1)  # one example per pass
    together = score_examples(model, hellaswag_fixture, examples, batch_tokens=1 << 16)  # one pass
    for one, other in zip(alone, together):
        assert [score.tokens for score in one] == [score.tokens for score in other]
        assert [score.loss_sum for score in one] == pytest.approx([score.loss_sum for score in other], abs=1e-4)


def test_processes_score_their_shares_and_the_sums_give_the_whole(models, hellaswag_fixture):
    model, _ = models
    task = load_task_with(hellaswag_fixture, hellaswag_fixture.examples[:10])
    whole = evaluate_task(model, task)
    shares = [evaluate_task(model, task, rank=rank, world_size=3) for rank in range(3)]
    assert [share["count"] for share in shares] == [4, 3, 3]
    # What all_reduce would give each process: the sum of every process's [acc sum, acc_norm sum, count].
    totals = [
        sum(share[name] * share["count"] for share in shares) for name in ("acc", "acc_norm")
    ] + [10.0]
    summed = evaluate_task(model, task, rank=0, world_size=3, sum_across_processes=lambda _: totals)
    assert summed["count"] == 10
    assert summed["acc"] == pytest.approx(whole["acc"]) and summed["acc_norm"] == pytest.approx(whole["acc_norm"])


def test_scoring_keeps_the_models_mode_and_an_empty_share_is_nan(models, hellaswag_fixture):
    model, _ = models
    model.train()
    try:
        results = evaluate_task(model, load_task_with(hellaswag_fixture, []))
    finally:
        model.eval()
    assert results["count"] == 0 and math.isnan(results["acc"])
    evaluate_task(model, hellaswag_fixture, rank=0, world_size=32)
    assert not model.training


def load_task_with(task, examples):
    from nashcli.tasks.multiple_choice import MultipleChoiceTask

    return MultipleChoiceTask(task.name, examples, "empty")
