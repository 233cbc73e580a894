"""The evaluation loss per row: the same values as F.cross_entropy, without its full-size copies."""

import pytest
import torch
import torch.nn.functional as F

from nashcli.model import loss as loss_module
from nashcli.model.loss import IGNORE_INDEX, PaddedCrossEntropySum, padded_cross_entropy_rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_match_cross_entropy_over_the_real_columns_across_chunks(monkeypatch, dtype):
    # Chunks of 3 rows: the 10 rows span several, the last one partial.
    monkeypatch.setattr(loss_module, "eval_row_chunks", lambda n, v, d: [slice(s, min(s + 3, n)) for s in range(0, n, 3)])
    generator = torch.Generator().manual_seed(0)
    padded = torch.randn(10, 64, generator=generator).to(dtype)
    padded[:, 50:] = 100.0  # padding columns: huge, and never counted
    targets = torch.randint(0, 50, (10,), generator=generator)
    targets[[2, 7]] = IGNORE_INDEX
    losses, predictions = padded_cross_entropy_rows(padded, targets, vocab_size=50)
    real = padded[:, :50].float()
    expected = F.cross_entropy(real, targets, ignore_index=IGNORE_INDEX, reduction="none")
    assert losses.dtype == torch.float32 and losses.shape == (10,)
    torch.testing.assert_close(losses, expected, atol=1e-5, rtol=0)
    assert losses[[2, 7]].tolist() == [0.0, 0.0]
    assert predictions.tolist() == real.argmax(dim=-1).tolist()


def test_the_training_loss_is_the_sum_of_the_rows():
    logits = torch.randn(12, 64, generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 50, (12,), generator=torch.Generator().manual_seed(2))
    targets[3] = IGNORE_INDEX
    training = PaddedCrossEntropySum.apply(logits, targets, 50)
    rows, _ = padded_cross_entropy_rows(logits, targets, 50)
    torch.testing.assert_close(rows.sum(), training, atol=1e-5, rtol=0)
