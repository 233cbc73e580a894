"""Rotary position embeddings (RoPE, Su et al. 2021): positions as rotations of query and key pairs.

Each pair of dimensions (i, i + head_dim/2) of a query or key at position p is rotated by the angle
p * base^(-2i/head_dim). A query at p and a key at s then meet through the angle (p - s) only, so
attention sees relative positions and the model needs no position embedding. The half-split pairing
is GPT-NeoX's and Llama-in-transformers'.
"""

import torch
from torch import nn

ROPE_BASE = 10_000.0  # the RoPE paper's and Llama's base
Rotation = tuple[torch.Tensor, torch.Tensor]  # (cos, sin) of some positions, (T, head_dim/2) each


class Rotary(nn.Module):
    """cos and sin of every position's angles, (max_seq_len, head_dim/2) each, computed once.

    They are buffers (they follow .to(device)) but not persistent: checkpoints hold no copy.
    """

    def __init__(self, head_dim: int, max_seq_len: int, base: float = ROPE_BASE):
        super().__init__()
        frequencies = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (hs/2,)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), frequencies)  # (S, hs/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, start: int, length: int) -> Rotation:
        """(cos, sin), each (length, hs/2), of positions start..start+length-1."""
        return self.cos.narrow(0, start, length), self.sin.narrow(0, start, length)


def rotate(x: torch.Tensor, rotation: Rotation) -> torch.Tensor:
    """Queries or keys `x` (B, nh, T, hs) rotated by `rotation` = (cos, sin), each (T, hs/2)."""
    cos, sin = (part.to(x.dtype) for part in rotation)  # keep autocast's dtype for attention
    first, second = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)
