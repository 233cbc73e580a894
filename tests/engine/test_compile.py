import copy

import pytest
import torch
from torch._dynamo.utils import counters

from nashcli.config.models import ModelConfig
from nashcli.engine.compile import eager_fallback
from nashcli.model.gpt import GPT
from nashcli.model.loss import IGNORE_INDEX


def test_eager_fallback_lasts_only_while_active():
    before = torch._dynamo.config.suppress_errors
    with eager_fallback():
        assert torch._dynamo.config.suppress_errors is True
    assert torch._dynamo.config.suppress_errors == before is False  # dynamo's default, left as it was


def test_a_failed_compile_says_it_fell_back_to_eager_once():
    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("C++ compiler not found\ndetails")

    model = torch.nn.Linear(4, 4)
    compiled = torch.compile(model, backend=broken_backend)
    x = torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match=r"compile fell back to eager: .*C\+\+ compiler not found") as caught:
        with eager_fallback() as fallbacks:
            assert torch.equal(compiled(x), model(x))  # the run goes on, eagerly
            compiled(x + 1)
    assert fallbacks.count >= 1 and len([w for w in caught if "fell back" in str(w.message)]) == 1
    torch._dynamo.reset()


def test_varying_sequence_lengths_compile_without_graph_breaks_or_a_recompile_per_length():
    """SFT batches change length every step: one graph for the first length, one dynamic graph for
    all the others. Dynamo decides graph breaks and recompiles before any backend runs, so the
    quick "eager" backend shows them as inductor would (bench/gpu_check.py runs inductor on a GPU)."""
    torch._dynamo.reset()
    counters.clear()
    config = ModelConfig(n_layers=1, n_heads=2, d_model=32, d_ff=64, max_seq_len=32, vocab_size=1000)
    torch.manual_seed(0)
    model = GPT(config)
    reference = copy.deepcopy(model)
    compiled = torch.compile(model, backend="eager")
    # Batch 2, lengths 9..16: 18+ rows, past the few-rows product of decoding (model/layers.py).
    for length in (9, 13, 10, 16, 12, 11):
        inputs = torch.randint(0, config.vocab_size, (2, length))
        targets = torch.randint(0, config.vocab_size, (2, length))
        targets[0, : length // 2] = IGNORE_INDEX  # a masked prompt
        loss = compiled(inputs, targets)
        loss.backward()
        expected = reference(inputs, targets)
        expected.backward()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for parameter, expected_parameter in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, expected_parameter.grad, rtol=1e-4, atol=1e-6)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    torch._dynamo.reset()
