"""Muon whose orthogonalisation runs in bf16 only where bf16 matrix products are fast.

torch.optim.Muon always runs its Newton-Schulz iteration in bf16. That is right on GPUs and on CPUs
with bf16 units, but a CPU without them (AVX2 only) emulates bf16 at ~0.3 GFLOP/s against ~150 in
fp32: one Muon step of modern-small took ~5 s there against ~0.1 s in fp32 (bench/README.md).
"""

import math

import torch

from nashcli.engine.precision import has_bf16_matrix_units


class Muon(torch.optim.Muon):
    """torch.optim.Muon with `adjust_lr_fn="match_rms_adamw"`, orthogonalising in `orthogonalize_dtype`.

    The update is torch's (momentum as a lerp, optional Nesterov, quintic Newton-Schulz, decoupled
    weight decay, lr x 0.2 x sqrt(max(rows, columns))); the state (one momentum_buffer per matrix)
    and the param groups are torch's too, so a state saved by torch.optim.Muon loads unchanged.
    The lr scale is symmetric in the matrix's shape, so it does not matter that nash stores its
    matrices (in, out) where torch's "original" rule assumes (out, in).
    """

    def __init__(self, params, *, orthogonalize_dtype: torch.dtype, **settings):
        super().__init__(params, adjust_lr_fn="match_rms_adamw", **settings)
        self.orthogonalize_dtype = orthogonalize_dtype  # not a group setting: it belongs to the machine

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                grad = parameter.grad
                state = self.state[parameter]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buffer = state["momentum_buffer"]
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalize(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"], self.orthogonalize_dtype
                )
                parameter.mul_(1 - lr * weight_decay)
                parameter.add_(update.to(parameter.dtype), alpha=-lr * 0.2 * math.sqrt(max(parameter.shape)))
        return loss


def orthogonalize(
    matrix: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """Approximately U V^T of matrix = U S V^T by a quintic Newton-Schulz iteration in `dtype`
    (singular values land in roughly [0.5, 1.5], which trains as well as exactly 1)."""
    a, b, c = coefficients
    wide = matrix.size(0) <= matrix.size(1)
    x = matrix.to(dtype) if wide else matrix.to(dtype).T  # X X^T is then the smaller Gram matrix
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's range
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


def orthogonalize_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the device multiplies bf16 matrices natively (as torch.optim.Muon does everywhere), else fp32."""
    return torch.bfloat16 if has_bf16_matrix_units(device) else torch.float32
