import pytest
import torch
import torch.nn.functional as F

from nashcli.config import ModelConfig
from nashcli.engine.distributed import DistributedContext
from nashcli.engine.precision import Precision, make_grad_scaler
from nashcli.engine.step import forward_backward
from nashcli.model.gpt import GPT
from nashcli.model.loss import IGNORE_INDEX

SINGLE_CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
FP32 = Precision("fp32", "cpu")


def tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=64, max_seq_len=16, dropout=0.0))


def masked_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """6 rows whose three pairs of rows have very different numbers of ignored targets (SFT-like)."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 50257, (6, 16), generator=generator)
    targets = torch.randint(0, 50257, (6, 16), generator=generator)
    targets[0:2, :13] = IGNORE_INDEX  # 3 targets per row
    targets[4:6, 1:] = IGNORE_INDEX  # 1 target per row; rows 2-3 keep all 16
    return inputs, targets


def reference_mean_loss_gradients(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The mean cross-entropy over the non-ignored targets of one whole batch and its gradients,
    by plain autograd through F.cross_entropy: no forward_backward, no accumulation."""
    model = tiny_model()
    logits = model(inputs)  # (B, T, vocab_size)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    loss.backward()
    return loss.detach(), [parameter.grad for parameter in model.parameters()]


def test_accumulating_micro_batches_equals_one_batch_k_times_larger_with_uneven_masks():
    # Three micro-batches with 6, 32 and 2 targets (SFT-like masks) against one forward/backward of
    # the six rows together: the step's loss and gradients are the same mean over its 40 targets.
    inputs, targets = masked_batch()
    accumulated, whole = tiny_model(), tiny_model()
    micro_batches = [(inputs[i : i + 2], targets[i : i + 2]) for i in (0, 2, 4)]
    assert [int((t != IGNORE_INDEX).sum()) for _, t in micro_batches] == [6, 32, 2]
    split_totals = forward_backward(accumulated, micro_batches, SINGLE_CPU, FP32, make_grad_scaler(FP32))
    whole_totals = forward_backward(whole, [(inputs, targets)], SINGLE_CPU, FP32, make_grad_scaler(FP32))
    assert split_totals.target_tokens == whole_totals.target_tokens == 2 * (3 + 16 + 1)
    assert split_totals.input_tokens == whole_totals.input_tokens == 6 * 16
    torch.testing.assert_close(split_totals.loss_sum, whole_totals.loss_sum, rtol=0, atol=1e-4)
    for (name, split_param), whole_param in zip(accumulated.named_parameters(), whole.parameters()):
        torch.testing.assert_close(split_param.grad, whole_param.grad, rtol=0, atol=1e-6, msg=name)
    # Both equal the mean loss by plain autograd, so a scale that is wrong the same way in both
    # (no division, a division by the micro-batch count) is caught too.
    reference_loss, reference_grads = reference_mean_loss_gradients(inputs, targets)
    torch.testing.assert_close(split_totals.loss_sum / split_totals.target_tokens, reference_loss, rtol=0, atol=1e-5)
    for (name, split_param), reference_grad in zip(accumulated.named_parameters(), reference_grads):
        torch.testing.assert_close(split_param.grad, reference_grad, rtol=0, atol=1e-6, msg=name)


def test_averaging_per_micro_batch_means_would_weigh_tokens_unequally():
    # The bug the global count prevents: mean of micro-batch means over-weighs sparse micro-batches.
    inputs, targets = masked_batch()
    whole, naive = tiny_model(), tiny_model()
    forward_backward(whole, [(inputs, targets)], SINGLE_CPU, FP32, make_grad_scaler(FP32))
    for i in (0, 2, 4):
        micro_targets = targets[i : i + 2]
        loss = naive(inputs[i : i + 2], micro_targets) / (micro_targets != IGNORE_INDEX).sum() / 3
        loss.backward()
    difference = max((a.grad - b.grad).abs().max().item() for a, b in zip(whole.parameters(), naive.parameters()))
    assert difference > 1e-4


@pytest.mark.parametrize("precision_name", ["bf16", "fp16"])
def test_low_precision_autocast_paths_run_on_cpu_and_keep_fp32_gradients(precision_name):
    inputs, targets = masked_batch()
    model, reference = tiny_model(), tiny_model()
    precision = Precision(precision_name, "cpu")
    scaler = make_grad_scaler(precision)
    totals = forward_backward(model, [(inputs, targets)], SINGLE_CPU, precision, scaler)
    forward_backward(reference, [(inputs, targets)], SINGLE_CPU, FP32, make_grad_scaler(FP32))
    assert torch.isfinite(totals.loss_sum)
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    largest_difference = 0.0
    for param, reference_param in zip(model.parameters(), reference.parameters()):
        assert param.grad.dtype == torch.float32
        # bf16/fp16 matmuls: close to fp32, not equal
        torch.testing.assert_close(param.grad / scale, reference_param.grad, rtol=0.1, atol=2e-2)
        largest_difference = max(largest_difference, (param.grad / scale - reference_param.grad).abs().max().item())
    assert largest_difference > 1e-5  # the matmuls really ran in the low precision
