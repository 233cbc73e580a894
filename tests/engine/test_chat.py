"""The chat session: prompts in SFT's exact format, the KV cache kept across turns, dropped turns, /reset
and stopping mid-answer, on real (tiny) models and the real tokenizer."""

import json

import pytest
import torch

from nashcli.config.models import ModelConfig
from nashcli.data.chat_format import render_chat_prompt, render_prompt
from nashcli.data.sft import load_sft_examples
from nashcli.data.tokenizer import get_tokenizer
from nashcli.engine.chat import ChatSampling, ChatSession, default_max_answer_tokens
from nashcli.errors import NashError
from nashcli.model.gpt import GPT
from nashcli.model.sampling import continue_tokens, generate_tokens

TOKENIZER = get_tokenizer()
EOT = TOKENIZER.eot_token
WORDS = [" the", " cat", " sat", " on", " mat", " a", " dog", " ran", " and", " it"]
QUESTIONS = ["Hello there", "What is the capital of France?", "And of Spain?", "Thanks!", "Tell me more.", "Why?"]


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are 32 wide: split over threads (model/layers.py, few_rows_matmul), their products
    wait on busy cores, and these tests ran 10x slower on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noisy_model(max_seq_len: int = 128, **options) -> GPT:
    """A GPT with trained-looking random weights over the GPT-2 vocabulary: its answers depend on the
    context and are any tokens, often not the ones BPE would give their text (so caches get rebuilt)."""
    torch.manual_seed(0)
    config = ModelConfig(n_layers=2, n_heads=2, d_model=32, d_ff=64, vocab_size=50257, max_seq_len=max_seq_len)
    model = GPT(config.model_copy(update=options))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    return model.eval()


def word_model(max_seq_len: int = 128) -> GPT:
    """A noisy model that only says WORDS or <|endoftext|>, chosen by context: its answers are the
    tokens BPE gives their text, so the cache of one turn is a prefix of the next turn's prompt.

    Only the head rows of those tokens are non-zero, and they all read dimension 0 of the final
    hidden state, which the final norm's bias makes large: their logits are far above the others'.
    <|endoftext|> takes the place of " and" (a copy of its row, a little likelier), so answers end."""
    model = noisy_model(max_seq_len, tie_embeddings=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.final_norm.bias[0] = 5.0
        model.lm_head.zero_()
        for token in [single_token(word) for word in WORDS]:
            model.lm_head[token] = torch.randn(model.config.d_model, generator=generator)
            model.lm_head[token, 0] = 3.0
        model.lm_head[EOT] = model.lm_head[single_token(" and")]
        model.lm_head[EOT, 0] += 0.01
    return model


def single_token(text: str) -> int:
    (token,) = TOKENIZER.encode(text)
    return token


def session(model, max_answer_tokens=8, temperature=0.0, system=None, seed=0) -> ChatSession:
    sampling = ChatSampling(max_answer_tokens, temperature=temperature)
    return ChatSession(model, TOKENIZER, sampling, system=system, generator=torch.Generator().manual_seed(seed))


def answer(chat: ChatSession, text: str, **stream_options):
    turn = chat.ask(text)
    streamed = "".join(turn.stream(**stream_options))
    assert streamed == turn.text
    return turn


def sft_prompt_ids(messages: list[dict], tmp_path) -> list[int]:
    """The prompt tokens SFT trains on for `messages` (the last one the completion), through its loader."""
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"messages": messages}) + "\n", encoding="utf-8")
    (example,), _ = load_sft_examples(path, TOKENIZER, max_seq_len=4096)
    return example.tokens[: example.num_prompt_tokens].tolist()


@pytest.mark.parametrize("system", [None, "You are terse."])
def test_each_turn_prompt_is_the_sft_rendering_of_the_conversation(system, tmp_path):
    chat = session(noisy_model(max_seq_len=512), system=system)
    for question in QUESTIONS[:4]:
        turn = answer(chat, question)
        conversation = turn.messages + [{"role": "assistant", "content": turn.text}]
        assert conversation == chat.messages
        assert turn.prompt_ids == sft_prompt_ids(conversation, tmp_path)
        assert TOKENIZER.decode(turn.prompt_ids) == render_chat_prompt(conversation)
    expected_roles = (["system"] if system else []) + ["user", "assistant"] * 4
    assert [message["role"] for message in chat.messages] == expected_roles


@pytest.mark.parametrize("make_model, temperature", [(word_model, 0.0), (word_model, 1.0), (noisy_model, 1.0)])
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_cached_turns_decode_exactly_as_a_fresh_decode_of_the_rendered_history(make_model, temperature, system):
    model = make_model()
    chat = session(model, temperature=temperature, system=system, seed=5)
    reference_generator = torch.Generator().manual_seed(5)  # draws in step with the session's
    reused, ended_by = [], set()
    for question in QUESTIONS:
        history = chat.messages + [{"role": "user", "content": question}]
        turn = chat.ask(question)
        if turn.dropped_turns == 0:
            assert turn.messages == history
        fresh_prompt = TOKENIZER.encode(render_prompt(turn.messages))
        expected = list(
            generate_tokens(model, fresh_prompt, 8, temperature=temperature, generator=reference_generator,
                            stop_token=EOT)
        )
        "".join(turn.stream())
        assert turn.answer_ids == expected
        reused.append(turn.reused_tokens)
        ended_by.add(turn.ended_by)
    if make_model is word_model:
        assert all(count > 0 for count in reused[1:4]), reused  # the kept cache is what was tested
        assert ended_by == {"end_token", "max_tokens"}
    else:
        assert 0 in reused[1:], reused  # so was a cache rebuilt from the whole prompt


def test_an_answer_ends_at_the_end_token_which_is_not_part_of_its_text():
    model = word_model()
    chat = session(model)
    turns = [answer(chat, question) for question in QUESTIONS]
    ended = [turn for turn in turns if turn.ended_by == "end_token"]
    assert ended, [turn.ended_by for turn in turns]
    for turn in ended:
        assert len(turn.answer_ids) < 8 and EOT not in turn.answer_ids
        full = list(generate_tokens(model, turn.prompt_ids, 8, temperature=0))
        assert full[: len(turn.answer_ids) + 1] == turn.answer_ids + [EOT]
        assert "<|endoftext|>" not in turn.text


def test_the_oldest_whole_turns_are_dropped_when_the_context_is_full():
    model = word_model(max_seq_len=64)
    chat = session(model, max_answer_tokens=8, system="Be brief.")
    assert chat.max_prompt_tokens == 64 - 8 + 1
    dropping = []
    for question in QUESTIONS:
        before = list(chat.messages)
        turn = answer(chat, question)
        kept = before[:1] + before[1 + 2 * turn.dropped_turns :] + [{"role": "user", "content": question}]
        assert turn.messages == kept and turn.messages[0]["role"] == "system"
        assert len(turn.prompt_ids) <= chat.max_prompt_tokens
        if turn.dropped_turns:
            dropping.append(turn)
            # Whole turns, and no more than needed: keeping one more would not fit.
            one_more = before[:1] + before[1 + 2 * (turn.dropped_turns - 1) :] + [kept[-1]]
            assert len(TOKENIZER.encode(render_prompt(one_more))) > chat.max_prompt_tokens
            assert turn.reused_tokens == 0  # the cache is rebuilt
        assert turn.answer_ids == list(generate_tokens(model, turn.prompt_ids, 8, temperature=0, stop_token=EOT))
    assert dropping, "the conversation never outgrew the context"


def test_a_message_too_long_for_the_context_is_refused_and_the_history_kept():
    chat = session(word_model(max_seq_len=64), max_answer_tokens=8)
    answer(chat, "Hi")
    before = list(chat.messages)
    with pytest.raises(NashError, match=r"this message takes \d+ tokens .*shorten it, or lower --max-tokens"):
        chat.ask("word " * 60)
    assert chat.messages == before
    answer(chat, "Hi again")
    assert len(chat.messages) == 4


def test_reset_forgets_the_conversation_but_not_the_system_message():
    model = word_model()
    chat = session(model, system="Be brief.")
    for question in QUESTIONS[:3]:
        answer(chat, question)
    chat.reset()
    assert chat.messages == [{"role": "system", "content": "Be brief."}]
    after_reset = answer(chat, "Hello there")
    fresh = answer(session(model, system="Be brief."), "Hello there")
    assert after_reset.prompt_ids == fresh.prompt_ids and after_reset.reused_tokens == 0
    assert after_reset.answer_ids == fresh.answer_ids


def test_stopping_mid_answer_keeps_the_partial_answer_and_the_session_going():
    model = word_model()
    chat = session(model, max_answer_tokens=12)
    answer(chat, "Hello there")
    produced = []
    stopped = chat.ask("Tell me a long story")
    for _ in stopped.stream(should_stop=lambda: len(produced) == 3):
        produced.append(1)
    assert stopped.ended_by == "stopped" and len(stopped.answer_ids) == 3
    assert chat.messages[-1] == {"role": "assistant", "content": TOKENIZER.decode(stopped.answer_ids)}
    uninterrupted = list(generate_tokens(model, stopped.prompt_ids, 12, temperature=0, stop_token=EOT))
    assert stopped.answer_ids == uninterrupted[:3]
    following = answer(chat, "Go on")
    assert following.prompt_ids == TOKENIZER.encode(render_prompt(chat.messages[:-1]))
    assert following.answer_ids == list(
        generate_tokens(model, following.prompt_ids, 12, temperature=0, stop_token=EOT)
    )


def test_a_turn_prepared_before_the_conversation_changed_cannot_stream():
    chat = session(word_model())
    stale = chat.ask("Hello")
    answer(chat, "Hi")
    with pytest.raises(RuntimeError, match="ask again"):
        next(stale.stream())


@pytest.mark.parametrize(
    "max_answer_tokens, system, message",
    [
        (64, None, r"the chat markers take \d+ tokens.*64-token context holds 1: lower --max-tokens$"),
        (8, "word " * 60, r"the system message and the chat markers take .* lower --max-tokens or shorten --system"),
    ],
)
def test_a_session_that_cannot_fit_one_turn_is_refused(max_answer_tokens, system, message):
    with pytest.raises(NashError, match=message):
        session(word_model(max_seq_len=64), max_answer_tokens=max_answer_tokens, system=system)


def test_the_default_answer_length_leaves_half_a_small_context():
    assert default_max_answer_tokens(1024) == 200
    assert default_max_answer_tokens(128) == 64


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_continue_tokens_from_an_empty_cache_is_generate_tokens(temperature):
    model = noisy_model(max_seq_len=32)
    prompt = TOKENIZER.encode("Once upon a time")
    cache = model.new_kv_cache(batch_size=1)
    continued = list(continue_tokens(model, cache, prompt, 10, temperature=temperature,
                                     generator=torch.Generator().manual_seed(3)))
    expected = list(generate_tokens(model, prompt, 10, temperature=temperature,
                                    generator=torch.Generator().manual_seed(3)))
    assert continued == expected
    assert cache.length == len(prompt) + 10 - 1  # the last token is chosen, not fed
    more = TOKENIZER.encode(" and")
    kept = list(continue_tokens(model, cache, more, 5, temperature=0))
    assert kept == list(generate_tokens(model, prompt + continued[:-1] + more, 5, temperature=0))


def test_continue_tokens_refuses_to_run_past_the_context():
    model = noisy_model(max_seq_len=16)
    cache = model.new_kv_cache(batch_size=1)
    with pytest.raises(ValueError, match="exceed the context length 16"):
        next(continue_tokens(model, cache, list(range(10)), 8))
    assert len(list(continue_tokens(model, cache, list(range(10)), 7, temperature=0))) == 7
