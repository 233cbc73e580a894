import pytest
import torch

from nashcli.config.models import ModelConfig
from nashcli.engine.loading import load_model
from nashcli.engine.trainer import train
from nashcli.model.gpt import GPT
from nashcli.model.sampling import filter_logits, generate_tokens

TINY = ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=128, vocab_size=100, max_seq_len=16)
PROMPT = [3, 14, 15, 92, 65]
EVERY_OPTION_ON = dict(
    positions="rope", norm="rmsnorm", activation="relu2", qk_norm=True, tie_embeddings=False, bias=False,
    zero_init_output=True,
)


def trained_looking_model(**options) -> GPT:
    torch.manual_seed(0)
    model = GPT(TINY.model_copy(update=options))
    with torch.no_grad():  # trained-looking weights, so greedy output is not one token repeated
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.eval()


@pytest.fixture
def model() -> GPT:
    return trained_looking_model()


def crafted_model(logits: list[float]) -> GPT:
    """A model whose next-token logits are `logits` (then zeros) whatever the context: the blocks'
    output projections and the final LayerNorm gain are zero, so the final hidden state is the
    LayerNorm bias e_0 and the logits are column 0 of the embedding."""
    torch.manual_seed(0)
    model = GPT(TINY)
    with torch.no_grad():
        for block in model.blocks:
            for projection in (block.attention.out_proj, block.mlp.down):
                projection.weight.zero_()
                projection.bias.zero_()
        model.final_norm.weight.zero_()
        model.final_norm.bias.zero_()
        model.final_norm.bias[0] = 1.0
        model.token_embedding.weight[:, 0] = 0.0
        model.token_embedding.weight[: len(logits), 0] = torch.tensor(logits)
    return model.eval()


def sample(model: GPT, count: int, seed: int, **options) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return list(generate_tokens(model, PROMPT, count, generator=generator, **options))


def test_seeded_sampling_is_reproducible(model):
    first = sample(model, 30, seed=7, temperature=1.0)
    assert len(first) == 30
    assert sample(model, 30, seed=7, temperature=1.0) == first
    assert sample(model, 30, seed=8, temperature=1.0) != first


@pytest.mark.parametrize("options", [{}, {"positions": "rope"}, EVERY_OPTION_ON], ids=["gpt2", "rope", "all"])
def test_greedy_with_the_cache_equals_greedy_without_it_past_the_context_length(options):
    model = trained_looking_model(**options)
    # 5 prompt tokens + 40 new ones in a 16-token context: the window slides several times.
    cached = list(generate_tokens(model, PROMPT, 40, temperature=0))
    uncached = list(generate_tokens(model, PROMPT, 40, temperature=0, use_cache=False))
    assert len(cached) == 40
    assert cached == uncached
    assert len(set(cached)) > 3


def test_greedy_is_the_argmax_and_the_window_keeps_the_newest_half_after_a_slide(model):
    tokens = list(PROMPT) + list(generate_tokens(model, PROMPT, 14, temperature=0))
    assert len(tokens) == 19
    with torch.no_grad():
        # Tokens 6..16 were predicted from the whole sequence so far (within the 16-token context).
        for end in range(len(PROMPT), 17):
            assert tokens[end] == int(model(torch.tensor([tokens[:end]]))[0, -1].argmax())
        # Token 17 needs a 17th context position: the window slides to the newest 8 tokens.
        assert tokens[17] == int(model(torch.tensor([tokens[9:17]]))[0, -1].argmax())
        assert tokens[18] == int(model(torch.tensor([tokens[9:18]]))[0, -1].argmax())


def test_a_run_trained_with_every_option_loads_and_generates_the_same_with_and_without_the_cache(tiny_config):
    options = [f"model.{key}={str(value).lower()}" for key, value in EVERY_OPTION_ON.items()]
    train(tiny_config("name=modern", "train.max_steps=2", "train.eval_interval=1", *options))
    model, config = load_model("runs/modern", "last", device="cpu")
    assert config.model == ModelConfig(**{**config.model.model_dump(), **EVERY_OPTION_ON})
    assert "lm_head" in model.state_dict() and config.model.max_seq_len == 16
    for temperature in (0.0, 1.0):  # greedy, then seeded sampling; 40 tokens slide the 16-token window
        runs = [
            list(generate_tokens(model, PROMPT, 40, temperature=temperature,
                                 generator=torch.Generator().manual_seed(1), use_cache=use_cache))
            for use_cache in (True, False)
        ]
        assert len(runs[0]) == 40 and runs[0] == runs[1]


def test_a_prompt_longer_than_the_context_keeps_its_end(model):
    long_prompt = list(range(40))
    first = next(generate_tokens(model, long_prompt, 1, temperature=0))
    with torch.no_grad():
        assert first == int(model(torch.tensor([long_prompt[-16:]]))[0, -1].argmax())


def test_stop_token_ends_generation_and_is_not_yielded(model):
    greedy = list(generate_tokens(model, PROMPT, 10, temperature=0))
    stop = greedy[3]
    first_stop = greedy.index(stop)
    assert list(generate_tokens(model, PROMPT, 10, temperature=0, stop_token=stop)) == greedy[:first_stop]


def test_top_k_samples_only_the_k_likeliest_tokens():
    model = crafted_model([2.0, 1.0, 3.0, 0.5, 2.5])
    drawn = set(sample(model, 300, seed=0, temperature=1.0, top_k=2))
    assert drawn == {2, 4}
    assert len(set(sample(model, 300, seed=0, temperature=1.0))) > 5  # without top-k: the whole vocabulary


def test_top_p_samples_only_the_smallest_nucleus():
    # Probabilities 0.5, 0.3, 0.15, 0.05 over tokens 0..3: their logits are log p + 10, so top-k
    # keeps them over the other 96 tokens' zeros.
    probabilities = torch.tensor([0.5, 0.3, 0.15, 0.05])
    model = crafted_model((probabilities.log() + 10.0).tolist())
    options = dict(temperature=1.0, top_k=4)
    assert set(sample(model, 300, seed=0, top_p=0.75, **options)) == {0, 1}
    assert set(sample(model, 300, seed=0, top_p=0.85, **options)) == {0, 1, 2}
    assert set(sample(model, 50, seed=0, top_p=0.0, **options)) == {0}


def test_filter_logits_on_a_crafted_distribution():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = lambda filtered: torch.isfinite(filtered).nonzero().flatten().tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=3)) == [0, 1, 2]
    assert kept(filter_logits(logits, top_p=0.79)) == [0, 1]
    assert kept(filter_logits(logits, top_p=0.81)) == [0, 1, 2]
    assert kept(filter_logits(logits, top_k=1, top_p=0.99)) == [0]
    assert kept(filter_logits(logits, top_p=1.0)) == [0, 1, 2, 3]


def test_generation_leaves_grad_mode_and_training_mode_as_they_were(model):
    model.train()
    for _ in generate_tokens(model, PROMPT, 3, temperature=0):
        assert torch.is_grad_enabled()  # the caller's code between tokens keeps autograd
        assert not model.training  # no dropout while sampling
    assert model.training
