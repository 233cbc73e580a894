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
        if torch.compiler.is_compiling():
            # One expression that the compiler fuses (the fp32 upcast never reaches memory); a loop
            # over chunks would pin the row count, and so recompile for every sequence length.
            log_sum_exp = torch.logsumexp(logits[:, :vocab_size].float(), dim=-1)  # (N,)
        else:
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
        row_scale = kept.float() * grad_loss  # (N,): d loss / d row loss
        if torch.compiler.is_compiling():
            # The same values as the chunks below, as one fusable elementwise expression over (N, padded V).
            columns = torch.arange(logits.shape[1], device=logits.device)  # (padded V,)
            probabilities = (logits.float() - log_sum_exp[:, None]).exp()
            one_hot = (columns == safe_targets[:, None]).float()
            real_columns = columns < vocab_size  # the padding columns get zero gradient
            grad = torch.where(real_columns, (probabilities - one_hot) * row_scale[:, None], 0.0)
            return grad.to(logits.dtype), None, None
        grad = torch.empty_like(logits)  # (N, padded V)
        grad[:, vocab_size:] = 0
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



def eval_row_chunks(num_rows: int, vocab_size: int, device: torch.device) -> list[slice]:
    """Row slices for evaluation over `vocab_size` columns: fp32 temporaries of 64 MB on CPUs (larger
    chunks than training's were faster there, and evaluation keeps no activations), 512 MB on GPUs."""
    chunk_elements = 1 << 24 if device.type == "cpu" else 1 << 27
    step = max(1, chunk_elements // vocab_size)
    return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


@torch.no_grad()
def padded_cross_entropy_rows(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 cross-entropy of every row, 0 where target == IGNORE_INDEX; the argmax of every row)
    over the first `vocab_size` columns of `logits` (N, >= vocab_size), each of shape (N,).

    For evaluation: it works through fp32 copies of some rows at a time, so no full-size fp32
    logits or log-probabilities are ever held (the training loss is left exactly as it was).
    """
    kept = targets != IGNORE_INDEX  # (N,)
    safe_targets = targets.masked_fill(~kept, 0)
    losses = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)  # (N,)
    predictions = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)  # (N,)
    for rows in eval_row_chunks(logits.shape[0], vocab_size, logits.device):
        # log_softmax is one fused pass; on CPUs logsumexp is several and about 3x slower.
        log_probs = torch.log_softmax(logits[rows, :vocab_size].float(), dim=-1)  # (n, V)
        losses[rows] = -log_probs.gather(1, safe_targets[rows, None]).squeeze(1)
        predictions[rows] = log_probs.argmax(dim=-1)
    return losses.masked_fill_(~kept, 0.0), predictions
