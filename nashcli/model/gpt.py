"""The GPT-2 model: attention, MLP, block, GPT, and the KV cache for incremental decoding.

By default the architecture is GPT-2's, so its weights load unchanged (nashcli/model/hf.py): learned
position embeddings, pre-LayerNorm blocks, GELU (tanh approximation) MLP, a final LayerNorm and an LM
head tied to the token embedding. Biases everywhere, LayerNorm eps 1e-5. The options of ModelConfig
swap single parts: rotary positions, RMSNorm, a squared-ReLU MLP, normalised queries and keys, an
untied head, no biases, and zero-initialised output projections.

The embedding / LM head has `config.padded_vocab_size` rows (a multiple of 64 by default): the
logits matmul runs much faster on that shape; the padding rows are zero, never indexed, receive no
gradient, and no caller ever sees them: logits, the loss and exported weights cover
`config.vocab_size` entries only.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nashcli.config.models import ModelConfig
from nashcli.model.layers import InOutLinear, activation_layer, few_rows_matmul, norm_layer
from nashcli.model.loss import PaddedCrossEntropySum
from nashcli.model.rotary import Rotary, Rotation, rotate

INIT_STD = 0.02  # GPT-2's initializer range


class KVCache:
    """Keys and values of every layer for the tokens seen so far, so each new token costs one
    position of work instead of a forward pass over the whole sequence.

    Preallocated to the model's context length: per layer, (B, heads, max_seq_len, head_dim) for
    keys and for values. `length` is the number of positions filled; GPT.hidden_states advances it.
    With rotary positions the keys are stored rotated, each by its own position.
    """

    def __init__(self, config: ModelConfig, batch_size: int, device, dtype: torch.dtype):
        shape = (batch_size, config.n_heads, config.max_seq_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.length = 0

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys/values (B, nh, T, hs) of `layer`; return all so far (B, nh, length+T, hs)."""
        # narrow() rather than [:, :, a:b] indexing: this runs for every layer and token while
        # decoding, where Python-side indexing costs are a visible share of a step.
        new_positions = keys.shape[2]
        self.keys[layer].narrow(2, self.length, new_positions).copy_(keys)
        self.values[layer].narrow(2, self.length, new_positions).copy_(values)
        end = self.length + new_positions
        return self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end)

    def advance(self, num_positions: int) -> None:
        self.length += num_positions

    def reset(self) -> None:
        """Forget every position (the tensors are reused; stale values are never read)."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        # one matmul for q, k, v (GPT-2's c_attn)
        self.qkv = InOutLinear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.out_proj = InOutLinear(config.d_model, config.d_model, bias=config.bias)
        self.out_dropout = nn.Dropout(config.dropout)
        # Normalised q and k bound the attention logits, which keeps their softmax from saturating.
        self.q_norm = norm_layer(config, config.head_dim) if config.qk_norm else None
        self.k_norm = norm_layer(config, config.head_dim) if config.qk_norm else None

    def forward(
        self, x: torch.Tensor, rotation: Optional[Rotation], kv_cache: Optional[KVCache], layer: int
    ) -> torch.Tensor:
        """`rotation`: the rotary (cos, sin) of the T new positions, None with learned positions."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotation is not None:
            q, k = rotate(q, rotation), rotate(k, rotation)
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.update(layer, k, v)  # (B, nh, past+T, hs)
        if past == 0:
            # Causal even for T == 1 (a 1x1 causal mask hides nothing): a constant, because `T > 1`
            # becomes a symbolic bool under torch.compile with varying lengths, which SDPA rejects.
            mask, is_causal = None, True
        elif T == 1:
            mask, is_causal = None, False  # one new token may look at every cached position
        else:
            # New token i sits at position past+i and may look at positions 0..past+i.
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            is_causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.out_dropout(self.out_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up = InOutLinear(config.d_model, config.d_ff, bias=config.bias)
        self.activation = activation_layer(config)
        self.down = InOutLinear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(self.activation(self.up(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention_norm = norm_layer(config, config.d_model)
        self.attention = CausalSelfAttention(config)
        self.mlp_norm = norm_layer(config, config.d_model)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, rotation: Optional[Rotation], kv_cache: Optional[KVCache], layer: int
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rotation, kv_cache, layer)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """GPT-2 language model over `config.vocab_size` tokens with a `config.max_seq_len` context.

    Example:
        model = GPT(ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=128, vocab_size=100))
        logits = model(torch.tensor([[1, 2, 3]]))          # (1, 3, 100)
        loss_sum = model(inputs, targets)                 # fp32 scalar: summed over kept targets
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.padded_vocab_size, config.d_model)  # the LM head when tied
        # Exactly one of the two gives positions: an embedding added to the input, or rotations in attention.
        learned = config.positions == "learned"
        self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model) if learned else None
        self.rotary = None if learned else Rotary(config.head_dim, config.max_seq_len)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = norm_layer(config, config.d_model)
        self.lm_head = None  # tied: the token embedding is the head (see head_weight)
        if not config.tie_embeddings:
            self.lm_head = nn.Parameter(torch.empty(config.padded_vocab_size, config.d_model))  # (padded V, C)
        # (key, weight) of the [C, V] LM-head copy used while decoding; see _decoding_head.
        self._decoding_head_cache: Optional[tuple[tuple, torch.Tensor]] = None
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2: N(0, 0.02) everywhere, zero biases, and the projections that write into the residual
        # stream scaled by 1/sqrt(2 * n_layers), since each layer adds two of them to the stream and
        # its variance would otherwise grow with depth. zero_init_output starts them at zero instead:
        # every block then begins as the identity, and the projections still get gradients.
        residual_std = 0.0 if self.config.zero_init_output else INIT_STD / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, InOutLinear):
                is_residual = name.endswith(("attention.out_proj", "mlp.down"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head, mean=0.0, std=INIT_STD)
        with torch.no_grad():  # padding rows stay zero, in the embedding and in an untied head
            self.token_embedding.weight[self.config.vocab_size :].zero_()
            self.head_weight[self.config.vocab_size :].zero_()

    @property
    def head_weight(self) -> torch.Tensor:
        """The LM head (padded V, C): the token embedding when tied, else its own `lm_head`."""
        return self.token_embedding.weight if self.lm_head is None else self.lm_head

    def forward(
        self,
        idx: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
        kv_cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) of the next token at every position of `idx` (B, T) int64, or,
        with `targets` (B, T), the SUM of cross-entropy over targets != IGNORE_INDEX (fp32 scalar;
        the caller divides by the token count, which may span several micro-batches).

        With `kv_cache`, `idx` continues the cached sequence: positions start at `kv_cache.length`,
        and the cache is extended by T.
        """
        hidden = self.hidden_states(idx, kv_cache)  # (B, T, C)
        if targets is None:
            return self.logits(hidden, decoding=kv_cache is not None)
        return self.loss_sum(hidden, targets)

    def hidden_states(self, idx: torch.Tensor, kv_cache: Optional[KVCache] = None) -> torch.Tensor:
        """The final norm's output (B, T, C) for `idx` (B, T), extending `kv_cache` if given."""
        B, T = idx.shape
        start = 0 if kv_cache is None else kv_cache.length
        if start + T > self.config.max_seq_len:
            raise ValueError(
                f"{start + T} positions exceed the context length {self.config.max_seq_len} "
                "(generate_tokens slides the window; callers must crop)"
            )
        x = self.token_embedding(idx)  # (B, T, C)
        rotation = None
        if self.rotary is not None:
            rotation = self.rotary(start, T)  # (cos, sin) of positions start..start+T-1, (T, hs/2) each
        else:
            x = x + self.position_embedding.weight.narrow(0, start, T)  # (T, C): positions start..start+T-1
        x = self.embedding_dropout(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, rotation, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.final_norm(x)

    def logits(self, hidden: torch.Tensor, decoding: bool = False) -> torch.Tensor:
        """Next-token logits (B, T, vocab_size) from `hidden` (B, T, C).

        `decoding` (a few rows, no gradient) multiplies by a contiguous [C, V] copy of the head
        through few_rows_matmul: a row times the copy reads memory in order, faster than
        `x @ W.T` over the [V, C] embedding (bench/README.md, "generate"). The copy costs one more
        head in memory while decoding.
        """
        vocab_size = self.config.vocab_size
        if decoding and not torch.is_grad_enabled():
            rows = hidden.reshape(-1, hidden.shape[-1])  # (N, C)
            return few_rows_matmul(rows, self._decoding_head()).view(*hidden.shape[:-1], vocab_size)
        # Padded matmul (fast shape), then a view of the real columns: no copy of the logits.
        return F.linear(hidden, self.head_weight)[..., :vocab_size]  # (B, T, V)

    def loss_sum(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum of fp32 cross-entropy over targets != IGNORE_INDEX, from `hidden` (B, T, C)."""
        logits = F.linear(hidden, self.head_weight)  # (B, T, padded V), bf16 under autocast
        return PaddedCrossEntropySum.apply(logits.flatten(0, 1), targets.flatten(), self.config.vocab_size)

    def _decoding_head(self) -> torch.Tensor:
        """[C, vocab_size] contiguous copy of the LM head, rebuilt when the weight changes
        (training steps and load_state_dict bump its version; .to() moves its storage)."""
        weight = self.head_weight
        key = (weight.device, weight.dtype, weight.data_ptr(), weight._version)
        if self._decoding_head_cache is None or self._decoding_head_cache[0] != key:
            transposed = weight.detach()[: self.config.vocab_size].t().contiguous()  # (C, V)
            self._decoding_head_cache = (key, transposed)
        return self._decoding_head_cache[1]

    def new_kv_cache(self, batch_size: int, device=None, dtype: Optional[torch.dtype] = None) -> KVCache:
        """An empty cache for `batch_size` sequences; device and dtype default to the parameters'
        (pass the autocast dtype when decoding under autocast)."""
        weight = self.token_embedding.weight
        return KVCache(self.config, batch_size, device or weight.device, dtype or weight.dtype)

    def num_parameters(self) -> int:
        """Trainable parameters: a tied embedding / LM head once, padding rows not at all."""
        total = sum(p.numel() for p in self.parameters())  # parameters() yields a shared tensor once
        padding_rows = self.config.padded_vocab_size - self.config.vocab_size
        padded_matrices = 1 if self.config.tie_embeddings else 2  # the embedding, and an untied head
        return total - padded_matrices * padding_rows * self.config.d_model


def count_parameters(config: ModelConfig) -> int:
    """GPT(config).num_parameters() without allocating weights (built on the meta device).

    Example: count_parameters(ModelConfig()) == 124_439_808  # GPT-2 124M
    """
    with torch.device("meta"):
        return GPT(config).num_parameters()


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token, for MFU.

    6 FLOPs per weight per token for every matmul weight (2 forward, 4 backward): per layer the
    q/k/v, output, and two MLP matrices, plus the LM head over the real vocabulary (the padding is
    our speed trick, not model work), tied or not. Attention scores and their weighted sum add
    12 * layers * d_model * seq_len (the PaLM / nanoGPT estimate, which ignores the causal half).
    Norms, biases, activations and rotations are elementwise work, left out like there, so the
    model options do not change the count.
    """
    C = config.d_model
    matmul_weights = config.n_layers * (4 * C * C + 2 * C * config.d_ff) + config.vocab_size * C
    return 6.0 * matmul_weights + 12.0 * config.n_layers * C * seq_len
