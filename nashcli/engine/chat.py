"""A conversation with a model in the chat format SFT trained on: the history, the KV cache kept
from turn to turn, and the oldest turns dropped when the context is full. What `nash chat` stands on;
no terminal input or output here.

Each turn's prompt is the tokens of `render_prompt(history + [user message])`, tokenized as one text,
exactly as SFT tokenizes the prompt of the same messages. The cache holds a prefix of those tokens
from the turn before (that prompt and the answer sampled after it); a turn feeds only what follows.
When the cached tokens are not a prefix of the new prompt (BPE of the whole text can merge across
the end of an answer, or the model sampled an answer in tokens other than the canonical ones, or old
turns were dropped), the cache is rebuilt from the whole prompt: the model always reads the exact
tokens a fresh decode of the rendered conversation would read.
"""

import codecs
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

from nashcli.data.chat_format import answer_end_token, render_prompt
from nashcli.data.tokenizer import Tokenizer
from nashcli.errors import NashError
from nashcli.model.gpt import GPT, KVCache
from nashcli.model.sampling import continue_tokens

# `nash chat`'s answer length when not given: as `nash generate`, unless the context is small.
DEFAULT_MAX_ANSWER_TOKENS = 200


def default_max_answer_tokens(max_seq_len: int) -> int:
    """200 tokens, or half the context when that is less (the other half is for the conversation)."""
    return min(DEFAULT_MAX_ANSWER_TOKENS, max_seq_len // 2)


@dataclass(frozen=True)
class ChatSampling:
    """How answers are sampled: as `nash generate` samples (see model/sampling.py)."""

    max_answer_tokens: int
    temperature: float = 0.8
    top_k: Optional[int] = None
    top_p: Optional[float] = None


@dataclass
class ChatTurn:
    """One user message and the model's answer to it, prepared by `ChatSession.ask`.

    Nothing changes in the session until `stream` runs: it adds the user message (and drops the
    oldest turns, if `dropped_turns`), then the answer, whole or partial, when it ends.
    """

    session: "ChatSession" = field(repr=False)
    messages: list[dict]  # the conversation the answer continues, ending with the user message
    prompt_ids: list[int]  # the tokens of render_prompt(messages)
    dropped_turns: int  # oldest turns (user message + answer) left out to fit the context
    reused_tokens: int  # leading prompt tokens already in the KV cache (0: it is rebuilt)
    answer_ids: list[int] = field(default_factory=list)
    text: str = ""  # the answer's text, also while it streams
    ended_by: Optional[str] = None  # "end_token", "max_tokens" or "stopped" once it has ended
    _history_version: int = field(default=0, repr=False)  # the session's, when the turn was prepared

    def stream(self, should_stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
        """Sample the answer, yielding its text as it comes (a character split across tokens comes
        whole). `should_stop()` is asked before each token: True ends the answer there ("stopped"),
        and what was said so far stays in the conversation, as an answer that ended any other way."""
        self.session._begin(self)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = self.session._sample(self)
        try:
            while True:
                if should_stop():
                    self.ended_by = "stopped"
                    break
                token = next(tokens, None)
                if token is None:
                    limit = self.session.sampling.max_answer_tokens
                    self.ended_by = "max_tokens" if len(self.answer_ids) == limit else "end_token"
                    break
                self.answer_ids.append(token)
                piece = decoder.decode(self.session.tokenizer.decode_bytes([token]))
                self.text += piece
                if piece:
                    yield piece
            tail = decoder.decode(b"", final=True)
            self.text += tail
            if tail:
                yield tail
        finally:
            tokens.close()
            self.session._end(self)


class ChatSession:
    """A multi-turn conversation with `model`, keeping its KV cache between turns.

    The history keeps whole turns: when the next prompt would leave less than `max_answer_tokens`
    of the context for the answer, the oldest turns go (the system message stays).

    Example:
        session = ChatSession(model, get_tokenizer(), ChatSampling(max_answer_tokens=100), system="Be brief.")
        turn = session.ask("Capital of France?")
        for text in turn.stream():
            print(text, end="")
    """

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        sampling: ChatSampling,
        system: Optional[str] = None,
        generator: Optional[torch.Generator] = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.generator = generator
        max_seq_len = model.config.max_seq_len
        # The prompt, then max_answer_tokens - 1 fed tokens (the last answer token is never fed).
        self.max_prompt_tokens = max_seq_len - sampling.max_answer_tokens + 1
        self._system = [{"role": "system", "content": system}] if system is not None else []
        empty_turn = len(self._prompt_ids(self._system + [{"role": "user", "content": ""}]))
        if empty_turn > self.max_prompt_tokens:
            what = "the system message and the chat markers" if system is not None else "the chat markers"
            raise NashError(
                f"{what} take {empty_turn} tokens: with room for an answer of {sampling.max_answer_tokens} tokens, "
                f"the model's {max_seq_len}-token context holds {self.max_prompt_tokens}: "
                "lower --max-tokens" + (" or shorten --system" if system is not None else "")
            )
        self.messages: list[dict] = list(self._system)
        self._cache: Optional[KVCache] = None  # made on the first answer
        self._cached_ids: list[int] = []  # the tokens the cache holds, in order
        self._history_version = 0  # changes whenever the history does: a prepared turn is then stale

    def reset(self) -> None:
        """Forget every turn (the system message stays) and empty the cache."""
        self.messages = list(self._system)
        self._cached_ids = []
        if self._cache is not None:
            self._cache.reset()
        self._history_version += 1

    def ask(self, user_text: str) -> ChatTurn:
        """Prepare the turn that answers `user_text` after the history, dropping the oldest turns if
        the conversation would not fit. NashError (history unchanged) when the message alone does
        not fit."""
        user = {"role": "user", "content": user_text}
        turns = self.messages[len(self._system) :]  # user message, answer, user message, ...
        for dropped in range(len(turns) // 2 + 1):
            messages = self._system + turns[2 * dropped :] + [user]
            prompt_ids = self._prompt_ids(messages)
            if len(prompt_ids) <= self.max_prompt_tokens:
                break
        else:
            alone = "with the system message " if self._system else ""
            raise NashError(
                f"this message takes {len(prompt_ids)} tokens {alone}in the chat format: with room for an answer "
                f"of {self.sampling.max_answer_tokens} tokens, the model's {self.model.config.max_seq_len}-token "
                f"context holds {self.max_prompt_tokens}: shorten it, or lower --max-tokens"
            )
        cached = self._cached_ids
        reused = len(cached) if len(cached) < len(prompt_ids) and prompt_ids[: len(cached)] == cached else 0
        return ChatTurn(self, messages, prompt_ids, dropped, reused, _history_version=self._history_version)

    def _prompt_ids(self, messages: list[dict]) -> list[int]:
        # One encode of the whole text, as SFT encodes a prompt (data/sft.py).
        return self.tokenizer.encode(render_prompt(messages))

    def _begin(self, turn: ChatTurn) -> None:
        if turn._history_version != self._history_version:
            raise RuntimeError("this turn was prepared before the conversation changed: ask again")
        self._history_version += 1
        self.messages = list(turn.messages)
        if self._cache is None:
            self._cache = self.model.new_kv_cache(batch_size=1)
        if turn.reused_tokens == 0:
            self._cache.reset()
        self._cached_ids = turn.prompt_ids[: turn.reused_tokens]

    def _sample(self, turn: ChatTurn) -> Iterator[int]:
        return continue_tokens(
            self.model,
            self._cache,
            turn.prompt_ids[turn.reused_tokens :],
            self.sampling.max_answer_tokens,
            temperature=self.sampling.temperature,
            top_k=self.sampling.top_k,
            top_p=self.sampling.top_p,
            generator=self.generator,
            stop_token=answer_end_token(self.tokenizer),
        )

    def _end(self, turn: ChatTurn) -> None:
        # Whatever stopped the answer, even an exception mid-token, the cache's length says which
        # of the prompt and answer tokens it holds.
        turn.text = self.tokenizer.decode(turn.answer_ids)
        self.messages.append({"role": "assistant", "content": turn.text})
        self._cached_ids = (turn.prompt_ids + turn.answer_ids)[: self._cache.length]
