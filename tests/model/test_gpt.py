import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from nashcli.config.models import ModelConfig
from nashcli.model.gpt import GPT, count_parameters, flops_per_token
from nashcli.model.layers import few_rows_matmul
from nashcli.model.loss import IGNORE_INDEX
from nashcli.model.rotary import rotate

# vocab 100 pads to 128 rows, so every test also exercises the padding.
TINY = ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=128, vocab_size=100, max_seq_len=32)

# Every value of every architecture option; the first of each is GPT-2's.
OPTION_VALUES = {
    "positions": ["learned", "rope"],
    "norm": ["layernorm", "rmsnorm"],
    "activation": ["gelu", "relu2"],
    "qk_norm": [False, True],
    "tie_embeddings": [True, False],
    "bias": [True, False],
    "zero_init_output": [False, True],
}
EVERY_COMBINATION = [dict(zip(OPTION_VALUES, values)) for values in itertools.product(*OPTION_VALUES.values())]
# Each option alone, and all of them together: enough for the slower tests.
EACH_OPTION_AND_ALL = [{key: values[1]} for key, values in OPTION_VALUES.items()] + [EVERY_COMBINATION[-1]]


def options_id(options: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in options.items()) or "gpt2"


def tiny_model(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(TINY.model_copy(update=changes))


def random_ids(batch: int, length: int, seed: int = 1, vocab: int = TINY.vocab_size) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_cover_the_real_vocabulary_only():
    model = tiny_model()
    assert model.token_embedding.weight.shape == (128, 32)
    logits = model(random_ids(3, 7))
    assert logits.shape == (3, 7, 100)
    assert logits.dtype == torch.float32


def test_changing_a_future_token_never_changes_earlier_logits():
    model = tiny_model().eval()
    idx = random_ids(2, 12)
    changed = idx.clone()
    changed[:, 8] = (changed[:, 8] + 1) % TINY.vocab_size
    before, after = model(idx), model(changed)
    assert torch.equal(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])


@pytest.mark.parametrize("options", EACH_OPTION_AND_ALL, ids=options_id)
@pytest.mark.parametrize("grad_enabled", [False, True], ids=["decoding", "with-grad"])
def test_kv_cache_logits_equal_full_forward_logits(grad_enabled, options):
    model = tiny_model(**options).eval()
    with torch.no_grad():  # zero_init_output would make the blocks the identity: give them weights
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    idx = random_ids(2, 20)
    full = model(idx)
    cache = model.new_kv_cache(batch_size=2)
    pieces = []
    with torch.set_grad_enabled(grad_enabled):
        # A prefill, a multi-token chunk on top of the cache, then one token at a time.
        for start, end in [(0, 6), (6, 11)] + [(t, t + 1) for t in range(11, 20)]:
            pieces.append(model(idx[:, start:end], kv_cache=cache))
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_refuses_positions_past_the_context():
    model = tiny_model().eval()
    cache = model.new_kv_cache(batch_size=1)
    model(random_ids(1, 30), kv_cache=cache)
    with pytest.raises(ValueError, match="exceed the context length 32"):
        model(random_ids(1, 3), kv_cache=cache)


def test_lm_head_is_the_token_embedding():
    model = tiny_model().eval()
    names = [name for name, _ in model.named_parameters()]
    assert sum("embedding" in name for name in names) == 2  # token and position only: no separate head
    idx = random_ids(1, 10, vocab=50)  # token 77 never appears in the input
    with torch.no_grad():
        model.token_embedding.weight[77] = 0.0
    assert torch.equal(model(idx)[..., 77], torch.zeros(1, 10))
    with torch.no_grad():
        model.token_embedding.weight[77] = 1.0
    hidden = model.hidden_states(idx)
    torch.testing.assert_close(model(idx)[..., 77], hidden.sum(dim=-1))


def test_padding_rows_start_zero_and_get_no_gradient():
    model = tiny_model()
    padding = model.token_embedding.weight[TINY.vocab_size :]
    assert torch.equal(padding, torch.zeros_like(padding))
    idx = random_ids(2, 16)
    model(idx, idx.roll(-1, dims=1)).backward()
    gradient = model.token_embedding.weight.grad
    assert torch.equal(gradient[TINY.vocab_size :], torch.zeros(28, 32))
    assert gradient[: TINY.vocab_size].abs().sum() > 0


def test_loss_is_the_fp32_sum_of_cross_entropy_over_the_real_vocabulary():
    model = tiny_model()
    idx, targets = random_ids(2, 16, seed=1), random_ids(2, 16, seed=2)
    loss_sum = model(idx, targets)
    expected = F.cross_entropy(model(idx).flatten(0, 1), targets.flatten(), reduction="sum")
    assert loss_sum.dtype == torch.float32 and loss_sum.dim() == 0
    torch.testing.assert_close(loss_sum, expected)
    # A random model is close to uniform over the 100 real tokens, not over the 128 padded rows.
    assert loss_sum.item() / 32 == pytest.approx(math.log(100), rel=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_gradient_equals_cross_entropy_gradient(dtype):
    idx, targets = random_ids(2, 16, seed=1), random_ids(2, 16, seed=2)
    targets[0, :4] = IGNORE_INDEX
    gradients = []
    for loss_of in (
        lambda model: model(idx, targets),
        lambda model: F.cross_entropy(
            model(idx).float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ),
    ):
        model = tiny_model()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_of(model)
        loss.backward()
        gradients.append([parameter.grad for parameter in model.parameters()])
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    for ours, reference in zip(*gradients):
        torch.testing.assert_close(ours, reference, atol=tolerance, rtol=tolerance)


def test_loss_ignores_targets_with_the_ignore_index():
    model = tiny_model()
    idx, targets = random_ids(2, 16, seed=1), random_ids(2, 16, seed=2)
    kept = torch.zeros(2, 16, dtype=torch.bool)
    kept[0, 5:], kept[1, :3] = True, True
    masked = targets.masked_fill(~kept, IGNORE_INDEX)
    per_token = F.cross_entropy(model(idx).flatten(0, 1), targets.flatten(), reduction="none")
    torch.testing.assert_close(model(idx, masked), per_token[kept.flatten()].sum())
    all_ignored = torch.full_like(targets, IGNORE_INDEX)
    assert model(idx, all_ignored).item() == 0.0


def test_bf16_autocast_loss_is_fp32_and_close_to_fp32_loss():
    model = tiny_model()
    idx, targets = random_ids(2, 16, seed=1), random_ids(2, 16, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_bf16 = model(idx, targets)
    loss_bf16.backward()
    assert loss_bf16.dtype == torch.float32
    assert loss_bf16.item() == pytest.approx(model(idx, targets).item(), rel=0.02)
    assert model.token_embedding.weight.grad[TINY.vocab_size :].abs().sum() == 0


def test_loss_on_a_tiny_batch_overfits_to_near_zero():
    model = tiny_model(vocab_size=64, dropout=0.0)
    idx = random_ids(2, 16, vocab=64)
    targets = idx.roll(-1, dims=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(40):
        optimizer.zero_grad()
        loss = model(idx, targets) / targets.numel()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_residual_projections_start_smaller_by_sqrt_of_twice_the_depth():
    model = tiny_model(n_layers=8, d_model=128, d_ff=512, n_heads=4)
    std = lambda parameter: parameter.detach().std().item()  # noqa: E731
    block = model.blocks[0]
    assert std(block.attention.qkv.weight) == pytest.approx(0.02, rel=0.05)
    assert std(block.mlp.up.weight) == pytest.approx(0.02, rel=0.05)
    assert std(block.attention.out_proj.weight) == pytest.approx(0.02 / 4, rel=0.05)
    assert std(block.mlp.down.weight) == pytest.approx(0.02 / 4, rel=0.05)
    assert torch.equal(block.attention.qkv.bias, torch.zeros(3 * 128))


def test_parameter_count_counts_the_tied_embedding_once_and_no_padding():
    assert count_parameters(ModelConfig()) == 124_439_808  # GPT-2 124M
    model = tiny_model()
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.num_parameters() == unique - (128 - 100) * 32
    assert count_parameters(TINY) == model.num_parameters()


def expected_parameters(config: ModelConfig) -> int:
    """The parameter count of `config` written out by hand, independently of the model's code."""
    C, F, V, hs = config.d_model, config.d_ff, config.vocab_size, config.head_dim
    norm = lambda width: width * (2 if config.norm == "layernorm" and config.bias else 1)  # noqa: E731
    layer = 4 * C * C + 2 * C * F + 2 * norm(C)
    layer += (3 * C + C + F + C) if config.bias else 0  # qkv, out, up, down biases
    layer += 2 * norm(hs) if config.qk_norm else 0
    embeddings = V * C * (1 if config.tie_embeddings else 2)
    embeddings += config.max_seq_len * C if config.positions == "learned" else 0
    return config.n_layers * layer + norm(C) + embeddings


@pytest.mark.parametrize("options", EVERY_COMBINATION, ids=options_id)
def test_parameter_count_is_right_for_every_option_combination(options):
    config = TINY.model_copy(update=options)
    model = GPT(config)
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    padding = (128 - 100) * 32 * (1 if config.tie_embeddings else 2)
    assert count_parameters(config) == model.num_parameters() == unique - padding == expected_parameters(config)
    assert flops_per_token(config, 32) == flops_per_token(TINY, 32)  # options add no matmul work


def test_untied_head_is_its_own_parameter_with_zero_padding_rows():
    model = tiny_model(tie_embeddings=False)
    assert model.lm_head is not model.token_embedding.weight
    assert "lm_head" in model.state_dict()
    assert torch.equal(model.lm_head[TINY.vocab_size :], torch.zeros(28, 32))
    idx = random_ids(2, 16)
    model(idx, idx.roll(-1, dims=1)).backward()
    assert torch.equal(model.lm_head.grad[TINY.vocab_size :], torch.zeros(28, 32))
    with torch.no_grad():
        model.token_embedding.weight[77] = 5.0  # moves the input of token 77, not its logit
        model.lm_head[77] = 0.0
    assert torch.equal(model(idx)[..., 77], torch.zeros(2, 16))


def test_without_bias_no_linear_layer_or_norm_has_one():
    names = [name for name, _ in tiny_model(bias=False).named_parameters()]
    assert not [name for name in names if name.endswith("bias")]


def test_zero_init_output_starts_every_block_as_the_identity():
    model = tiny_model(zero_init_output=True)
    for block in model.blocks:
        assert not block.attention.out_proj.weight.any() and not block.mlp.down.weight.any()
    idx = random_ids(1, 8)
    embedded = model.token_embedding(idx) + model.position_embedding.weight[:8]
    torch.testing.assert_close(model.hidden_states(idx), model.final_norm(embedded))


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(norm):
    model = tiny_model(qk_norm=True, norm=norm).eval()
    idx = random_ids(2, 12)
    before = model(idx)
    with torch.no_grad():
        for block in model.blocks:  # q and k are the first 2 * d_model outputs of qkv
            block.attention.qkv.weight[:, : 2 * 32] *= 8.0
            block.attention.qkv.bias[: 2 * 32] *= 8.0
    torch.testing.assert_close(model(idx), before, atol=1e-4, rtol=1e-4)


def test_relu2_is_squared_relu():
    mlp = tiny_model(activation="relu2").blocks[0].mlp
    x = torch.randn(3, 32)
    torch.testing.assert_close(mlp(x), mlp.down(torch.relu(mlp.up(x)) ** 2))


def test_rope_model_has_no_position_embedding_and_rotations_keep_only_relative_positions():
    model = tiny_model(positions="rope")
    assert model.position_embedding is None
    assert not any("position" in name or "rotary" in name for name in model.state_dict())
    q, k = torch.randn(2, 1, 1, 1, 16).unbind(0)  # (B, nh, T, hs) each
    score = lambda p, s: (rotate(q, model.rotary(p, 1)) * rotate(k, model.rotary(s, 1))).sum()  # noqa: E731
    torch.testing.assert_close(score(7, 3), score(20, 16))
    torch.testing.assert_close(score(3, 3), (q * k).sum())
    assert not torch.allclose(score(7, 3), score(7, 4))


@pytest.mark.parametrize("options", EACH_OPTION_AND_ALL, ids=options_id)
def test_every_option_trains_and_its_loss_falls(options):
    model = tiny_model(**options)
    idx = random_ids(4, 16)
    targets = idx.roll(-1, dims=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model(idx, targets) / targets.numel()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_flops_per_token_of_gpt2_124m():
    # 6 x (12 layers x (4 x 768^2 + 2 x 768 x 3072) + 50257 x 768) + 12 x 12 x 768 x 1024
    assert flops_per_token(ModelConfig(), 1024) == 6 * 123_532_032 + 113_246_208


def test_decoding_head_follows_weight_updates():
    model = tiny_model().eval()
    idx = random_ids(1, 4)
    with torch.no_grad():
        model(idx, kv_cache=model.new_kv_cache(1))  # builds the [C, V] decoding copy
        model.token_embedding.weight.mul_(2.0)
        decoded = model(idx, kv_cache=model.new_kv_cache(1))
    torch.testing.assert_close(decoded, model(idx))


@pytest.mark.parametrize("threads", [1, 2, 3, 5])  # 5 does not divide 48: the plain product
def test_few_rows_matmul_equals_addmm_whatever_the_thread_count(threads):
    generator = torch.Generator().manual_seed(0)
    rows, weight, bias = (torch.randn(*shape, generator=generator) for shape in [(3, 48), (48, 20), (20,)])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with_bias, without_bias = few_rows_matmul(rows, weight, bias), few_rows_matmul(rows, weight)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(with_bias, torch.addmm(bias, rows, weight))
    torch.testing.assert_close(without_bias, rows @ weight)
