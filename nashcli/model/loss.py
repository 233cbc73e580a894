"""The training loss over a padded vocabulary, computed in fp32 without full-size copies of the logits."""

import torch

IGNORE_INDEX = -100  # targets with this value carry no loss (SFT prompts and padding)


class PaddedCrossEntropySum(torch.autograd.Function):
    """Sum over rows with target != IGNORE_INDEX of cross-entropy over the first `vocab_size` columns
    of `logits` (N, padded V), computed in fp32 whatever the logits' dtype.

    F.cross_entropy would need the real columns as a contiguous copy, an fp32 copy under autocast,
    and keeps its fp32 log-probabilities for backward: about three full-size tensors next to the
    logits, which dominate a small model's memory. This keeps only the logits and one log-sum-exp
    per row, works through fp32 copies of a few rows at a time, and writes the gradient in the
    logits' dtype (where autocast would have cast it anyway); the padding columns get zero gradient.
    It saves both memory and time (figures in bench/README.md, "train").
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
        kept = targets != IGNORE_INDEX  # (N,)
        safe_targets = targets.masked_fill(~kept, 0)  # gather needs a valid column on ignored rows too
        log_sum_exp = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)  # (N,)
        for rows in PaddedCrossEntropySum._row_chunks(logits, vocab_size):
            log_sum_exp[rows] = torch.logsumexp(logits[rows, :vocab_size].float(), dim=-1)
        target_logits = logits.gather(1, safe_targets[:, None]).squeeze(1).float()  # (N,)
        ctx.save_for_backward(logits, safe_targets, kept, log_sum_exp)
        ctx.vocab_size = vocab_size
        return ((log_sum_exp - target_logits) * kept).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        logits, safe_targets, kept, log_sum_exp = ctx.saved_tensors
        vocab_size = ctx.vocab_size
        grad = torch.empty_like(logits)  # (N, padded V)
        grad[:, vocab_size:] = 0
        row_scale = kept.float() * grad_loss  # (N,): d loss / d row loss
        for rows in PaddedCrossEntropySum._row_chunks(logits, vocab_size):
            # d(logsumexp - target logit)/d logits = softmax - one_hot(target)
            probabilities = (logits[rows, :vocab_size].float() - log_sum_exp[rows, None]).exp_()  # (n, V)
            probabilities.scatter_add_(1, safe_targets[rows, None], -torch.ones_like(log_sum_exp[rows, None]))
            grad[rows, :vocab_size] = probabilities.mul_(row_scale[rows, None])
        return grad, None, None

    @staticmethod
    def _row_chunks(logits: torch.Tensor, vocab_size: int) -> list[slice]:
        # CPU: fp32 temporaries of 16 MB keep peak memory low and were faster than whole-tensor ops.
        # GPUs: every chunk costs about ten kernel launches, so chunks are large (512 MB in fp32).
        chunk_elements = 1 << 22 if logits.device.type == "cpu" else 1 << 27
        step = max(1, chunk_elements // vocab_size)
        num_rows = logits.shape[0]
        return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]
