"""Linear layers laid out for fast decoding on CPUs (GPT-2's (in, out) weights and few-row products
spread over every core), and the norms and activations that `model.norm` / `model.activation` pick."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nashcli.config.models import ModelConfig

NORM_EPS = 1e-5  # GPT-2's LayerNorm epsilon, used by RMSNorm too

# Products with at most this many rows and no gradient take the few-rows path (decoding, prefill).
FEW_ROWS = 16


def few_rows_matmul(rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """rows (N, in) @ weight (in, out) [+ bias] for a few rows, using every core torch may use.

    With few rows the product is a memory-bound read of the weight, and BLAS runs it on a single
    core whatever torch's thread count. Cutting the input dimension into one contiguous slab of the
    weight per thread makes a batched matmul that reads the slabs on all cores; the slabs' partial
    products are then summed (same value up to fp32 rounding order). It ran faster up to 16 rows
    (figures in bench/README.md, "generate"). On a machine whose cores are busy with other work, threads wait for
    each other and this can be slower than one core: set torch's threads (OMP_NUM_THREADS) to 1.
    """
    splits = torch.get_num_threads()
    in_features, out_features = weight.shape
    if splits == 1 or in_features % splits or rows.device.type != "cpu":  # GPUs run a gemv on all units
        return rows @ weight if bias is None else torch.addmm(bias, rows, weight)
    slabs = rows.view(rows.shape[0], splits, in_features // splits).transpose(0, 1)  # (S, N, in/S)
    partial = torch.bmm(slabs, weight.view(splits, in_features // splits, out_features))  # (S, N, out)
    product = partial.sum(dim=0)  # (N, out)
    return product if bias is None else product.add_(bias)


class InOutLinear(nn.Module):
    """y = x @ weight + bias, with `weight` stored (in_features, out_features): GPT-2's own layout
    (its "Conv1D"), not nn.Linear's (out, in).

    Why: decoding multiplies one row by every weight matrix, a memory-bound read, which runs faster
    in this layout (bench/README.md, "generate"), while training matmuls run at the same speed
    either way. It also makes Hugging Face GPT-2 weights load without transposes.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # (B*T, in)
        if rows.shape[0] <= FEW_ROWS and not torch.is_grad_enabled():
            y = few_rows_matmul(rows, self.weight, self.bias)
        elif self.bias is None:
            y = rows @ self.weight  # (B*T, out)
        else:
            y = torch.addmm(self.bias, rows, self.weight)  # (B*T, out)
        return y.view(*x.shape[:-1], -1)


def norm_layer(config: ModelConfig, width: int) -> nn.Module:
    """The normalisation `config.norm` names over the last `width` features. RMSNorm has no bias
    whatever `config.bias` says: it does not centre, so there is no mean to add back."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(width, eps=NORM_EPS)
    return nn.LayerNorm(width, eps=NORM_EPS, bias=config.bias)


class SquaredReLU(nn.Module):
    """relu(x)^2 (Primer, So et al. 2021): as cheap as ReLU, and trained faster than GELU there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def activation_layer(config: ModelConfig) -> nn.Module:
    if config.activation == "relu2":
        return SquaredReLU()
    return nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
