"""Autoregressive sampling: greedy, temperature, top-k and nucleus (top-p), streamed token by token."""

from typing import Iterator, Optional

import torch

from nashcli.model.gpt import GPT, KVCache


def generate_tokens(
    model: GPT,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    stop_token: Optional[int] = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids continuing `prompt_ids`, one at a time.

    temperature 0 is greedy (argmax; top_k/top_p do not matter). Otherwise the logits are divided by
    the temperature, cut to the `top_k` likeliest tokens and to the smallest set whose probability
    reaches `top_p`, and sampled with `generator` (seed it for reproducible samples; it must live on
    the model's device). Generation ends after `stop_token` is produced; that token is not yielded.

    The context window slides: the model sees at most `max_seq_len` tokens, and a prompt longer than
    that keeps its last `max_seq_len`. When the context is full and one more token is needed, the
    oldest tokens drop out so that the newest ceil(max_seq_len / 2) remain, and (with the cache)
    the cache is rebuilt from them in one forward pass. Dropping half at once, rather than one
    token per step, keeps the cost of the next max_seq_len / 2 tokens at one position each. Every
    slide is a full re-prefill, with rotary positions too: rotary attention depends on relative
    positions only, but past the first layer a kept position's keys and values were computed while
    attending to the dropped tokens, so a shifted cache would not be the model's state on the new
    window (and caches that drop their first tokens this way degrade sharply: Xiao et al. 2023,
    "attention sinks"). With `use_cache=False` every step runs the whole current window and slides
    identically, so both paths give the same tokens.

    The model runs in eval mode (no dropout) while the generator is alive, then gets its mode back.

    Example:
        ids = list(generate_tokens(model, tokenizer.encode("ROMEO:"), 50, temperature=0))
    """
    if not prompt_ids:
        raise ValueError("prompt_ids is empty: generation needs at least one token to continue")
    if max_new_tokens <= 0:
        return
    max_seq_len = model.config.max_seq_len
    tokens = list(prompt_ids)
    window_start = max(0, len(tokens) - max_seq_len)
    cache = model.new_kv_cache(batch_size=1) if use_cache else None
    was_training = model.training
    model.eval()
    try:
        logits = _next_token_logits(model, tokens[window_start:], cache)
        for produced in range(1, max_new_tokens + 1):
            token = _choose_token(logits, temperature, top_k, top_p, generator)
            if token == stop_token:
                return
            yield token
            if produced == max_new_tokens:
                return
            tokens.append(token)
            if len(tokens) - window_start > max_seq_len:
                window_start = len(tokens) - (max_seq_len + 1) // 2
                if cache is not None:
                    cache.reset()
                logits = _next_token_logits(model, tokens[window_start:], cache)
            elif cache is not None:
                logits = _next_token_logits(model, [token], cache)
            else:
                logits = _next_token_logits(model, tokens[window_start:], None)
    finally:
        model.train(was_training)


def continue_tokens(
    model: GPT,
    cache: KVCache,
    new_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    stop_token: Optional[int] = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` new token ids continuing the tokens `cache` holds, then `new_ids`.

    For callers that keep one cache across calls, as `nash chat` does from turn to turn: `new_ids`
    go through the model in one forward pass on top of what the cache holds, then each chosen token
    in turn. The cache is extended in place; afterwards (or when the caller stops early by closing
    the generator) it holds its earlier tokens, `new_ids`, and every yielded token but the last:
    the token that ends generation (`stop_token`, never yielded, or the last one allowed) is chosen
    but not fed, as nothing follows it yet. `cache.length` says exactly how many tokens it holds.

    Tokens are chosen as in `generate_tokens`, with the same options: from an empty cache this
    yields what `generate_tokens(model, new_ids, ...)` yields while its window does not slide. The
    window never slides here: the caller keeps cache.length + len(new_ids) + max_new_tokens - 1
    within max_seq_len (ValueError otherwise), dropping old context and rebuilding the cache itself.

    Example:
        cache = model.new_kv_cache(batch_size=1)
        answer = list(continue_tokens(model, cache, prompt_ids, 50, temperature=0, stop_token=50256))
    """
    if not new_ids:
        raise ValueError("new_ids is empty: the model needs at least one new token to continue from")
    needed = cache.length + len(new_ids) + max(max_new_tokens - 1, 0)
    if needed > model.config.max_seq_len:
        raise ValueError(
            f"{needed} positions exceed the context length {model.config.max_seq_len}: "
            "continue_tokens does not slide the window, callers must drop old context"
        )
    if max_new_tokens <= 0:
        return
    was_training = model.training
    model.eval()
    try:
        logits = _next_token_logits(model, list(new_ids), cache)
        for produced in range(1, max_new_tokens + 1):
            token = _choose_token(logits, temperature, top_k, top_p, generator)
            if token == stop_token:
                return
            yield token
            if produced == max_new_tokens:
                return
            logits = _next_token_logits(model, [token], cache)
    finally:
        model.train(was_training)


def seeded_generator(model: GPT, seed: Optional[int]) -> torch.Generator:
    """A random generator on the model's device for sampling: seeded with `seed` (reproducible
    samples), or from the operating system's entropy when `seed` is None."""
    generator = torch.Generator(device=model.head_weight.device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator

# Grad mode is set per call, never held across a `yield`: a generator suspended inside
# `with torch.no_grad()` would leave gradients off in the caller's code between tokens.
@torch.inference_mode()
def _next_token_logits(model: GPT, new_ids: list[int], cache: Optional[KVCache]) -> torch.Tensor:
    """fp32 logits (vocab_size,) of the token after `new_ids`, which continue `cache` if given."""
    device = model.head_weight.device
    idx = torch.tensor([new_ids], dtype=torch.long, device=device)  # (1, T)
    hidden = model.hidden_states(idx, cache)[:, -1:]  # (1, 1, C): only the last position is needed
    return model.logits(hidden, decoding=True)[0, -1].float()  # (V,)


@torch.inference_mode()
def _choose_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: Optional[int],
    top_p: Optional[float],
    generator: Optional[torch.Generator],
) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probabilities = torch.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
    return int(torch.multinomial(probabilities, num_samples=1, generator=generator))


def filter_logits(logits: torch.Tensor, top_k: Optional[int] = None, top_p: Optional[float] = None) -> torch.Tensor:
    """`logits` (V,) with every token outside the top-k and outside the nucleus set to -inf.

    The nucleus is the smallest set of likeliest tokens whose probabilities sum to at least `top_p`
    (the likeliest token is always kept, so top_p=0 is greedy).
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probabilities = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens likelier than it already reach top_p.
        mass_before = torch.cumsum(sorted_probabilities, dim=-1) - sorted_probabilities
        dropped = mass_before >= top_p
        dropped[0] = False
        logits = logits.clone()
        logits[order[dropped]] = float("-inf")
    return logits
